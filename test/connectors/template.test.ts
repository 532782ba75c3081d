import t from 'tap';
import { compileTemplate } from '../../src/connectors/template.ts';
import { expectCode } from '../fakes/databases.ts';

const row = { first_name: '  ada ', last_name: 'Lovelace', nick: null, empty: '', n: 42, tags: ['a', 'b'] };

t.test('substitution and filters', async (t) => {
  t.equal(compileTemplate('{{first_name}} {{ last_name }}').render(row), '  ada  Lovelace');
  t.equal(compileTemplate('{{ first_name | trim | upper }}-{{last_name|lower}}').render(row), 'ADA-lovelace');
  t.equal(compileTemplate('{{ nick | default:"n/a" }}/{{ empty | default:\'none\' }}/{{ n | default:"x" }}').render(row), 'n/a/none/42');
  t.equal(compileTemplate('{{ "Dear" | upper }} {{ \'it\\\'s\' }}').render(row), "DEAR it's");
  t.equal(compileTemplate('{{ nick }}|{{ tags }}').render(row), '|["a","b"]');
  t.equal(compileTemplate('no placeholders').render({}), 'no placeholders');
  t.same(compileTemplate('{{a}}{{b}}{{a}}').columns, ['a', 'b']);
  t.equal(compileTemplate('/c/{{ id }}', { encode: encodeURIComponent }).render({ id: 'a/b c' }), '/c/a%2Fb%20c');
});

t.test('errors are clear, at compile time where possible', async (t) => {
  await expectCode(t, async () => compileTemplate('{{ first_name | shout }}'), 'invalid_template');
  await expectCode(t, async () => compileTemplate('{{ first_name '), 'invalid_template');
  await expectCode(t, async () => compileTemplate('{{ }}'), 'invalid_template');
  await expectCode(t, async () => compileTemplate('{{ x | default }}'), 'invalid_template');
  await expectCode(t, async () => compileTemplate('{{ a + b }}'), 'invalid_template');
  const e = await expectCode(t, async () => compileTemplate('{{ missing }}', { columns: ['first_name'] }), 'invalid_template');
  t.match(e.message, /unknown column "missing"/);
  const late = compileTemplate('{{ missing }}');
  const e2 = await expectCode(t, async () => late.render(row), 'template_error');
  t.match(e2.message, /column "missing"/);
  await expectCode(t, async () => compileTemplate('{{ n }}{{ n }}', { maxLength: 3 }).render({ n: 'xx' }), 'template_error');
  await expectCode(t, async () => compileTemplate('/x/{{ nick }}', { requireValues: true }).render(row), 'template_error');
});

t.test('no code execution', async (t) => {
  await expectCode(t, async () => compileTemplate('{{ constructor.constructor("return 1")() }}'), 'invalid_template');
  t.equal(compileTemplate('{{ v }}').render({ v: '${process.exit(1)}' }), '${process.exit(1)}');
  await expectCode(t, async () => compileTemplate('{{ __proto__ }}').render({}), 'template_error');
});
