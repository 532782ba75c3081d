import { Type, type TObject, type TProperties, type TSchema } from '@sinclair/typebox';

// A GET body can be PUT back: a PUT schema accepts the view's read-only fields (id, createdAt,
// updatedAt, version, roles, secretNames, reference slugs…), marked `readOnly` in the OpenAPI
// document; refs.ts checkReadOnly ignores them when they equal the stored values and refuses
// them (422 read_only_field) when they differ. Deriving the list from the view keeps a field added
// to a view accepted without a second edit.

const NOTE = 'Read-only: accepted in a PUT body and ignored when it equals the stored value; 422 read_only_field when it differs.';

/** Fields of `view` that `put` does not take: what GET shows but a write cannot set. */
export function readOnlyFields(put: TObject, view: TObject): string[] {
  return Object.keys(view.properties).filter((k) => !(k in put.properties));
}

/** `put`'s properties plus the view's read-only ones (optional, readOnly), as a new object schema. */
export function acceptingReadOnly(put: TObject, view: TObject, options: { $id: string; description?: string }): TObject {
  const extra: TProperties = {};
  for (const k of readOnlyFields(put, view)) {
    const p = view.properties[k] as TSchema;
    extra[k] = Type.Optional(Type.Unsafe({ ...stripOptional(p), readOnly: true, description: p.description ? `${p.description}. ${NOTE}` : NOTE }));
  }
  return Type.Object({ ...put.properties, ...extra }, { ...(put.description ? { description: put.description } : {}), additionalProperties: false, ...options });
}

function stripOptional(s: TSchema): Record<string, unknown> {
  // A plain JSON copy (TypeBox's symbols dropped): the property is re-wrapped as optional above.
  return JSON.parse(JSON.stringify(s)) as Record<string, unknown>;
}
