import { CloneType, type TSchema } from '@sinclair/typebox';

// Write schemas declare the defaults the server fills in (`default`, an annotation: validators do
// not apply it, the services do), so generated clients and providers know them. A PATCH keeps
// what it does not send, so its schema must not claim any default: withoutDefaults.

/** A deep copy of `schema` (TypeBox kinds kept) with every `default` annotation removed. */
export function withoutDefaults<T extends TSchema>(schema: T): T {
  const copy = CloneType(schema);
  const strip = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(strip);
    else if (v && typeof v === 'object') {
      delete (v as Record<string, unknown>).default;
      for (const x of Object.values(v)) strip(x);
    }
  };
  strip(copy);
  return copy;
}
