// Consul's filter language (go-bexpr), as a service-resolver subset's `Filter` and the HTTP API's
// `?filter=` use it: `Service.Meta.version == v1 and "canary" not in Service.Tags`. An expression
// is parsed once and every selector is checked against a schema of the entry it runs on (Consul
// refuses an unknown selector when the expression is written); the result is a predicate over a
// plain JSON object of Consul's API shape.
//
// Semantics, as go-bexpr has them:
// - `==` and `!=` compare a string, number or boolean field with the value coerced to the
//   field's type (a value that is not a number, for a number field, is refused at compile time);
// - `in` and `contains` test membership in a list, a key of a map, or a substring of a string;
// - `matches` is an unanchored regular expression (Go's `MatchString`);
// - `is empty` holds for an empty string, list or map;
// - a map key that is absent reads as the empty string, except for `matches`, which it never
//   meets (and `not matches` always does);
// - a list of structs (`Checks`) can only be tested with `is empty`: go-bexpr cannot select a
//   field through a list, and neither can this.
// JSON-pointer selectors are not supported; bare (unquoted) values are words such as `v1`.

/** The type of a field an expression may select. */
export type FieldType =
  | 'string'
  | 'number'
  | 'bool'
  | 'strings'
  | 'map'
  | 'structs'
  | { readonly [field: string]: FieldType };

/** The fields of the entries an expression runs on. */
export type FilterSchema = { readonly [field: string]: FieldType };

/** An expression that does not parse or names a field the schema does not have. */
export class FilterError extends Error {
  override name = 'FilterError';
}

/** An entry of `/v1/health/service/<name>` or `/v1/health/connect/<name>` (CheckServiceNode). */
export const HEALTH_ENTRY_SCHEMA: FilterSchema = {
  Node: {
    ID: 'string',
    Node: 'string',
    Address: 'string',
    Datacenter: 'string',
    TaggedAddresses: 'map',
    Meta: 'map',
  },
  Service: {
    Kind: 'string',
    ID: 'string',
    Service: 'string',
    Tags: 'strings',
    Address: 'string',
    Port: 'number',
    Meta: 'map',
    TaggedAddresses: 'map',
    EnableTagOverride: 'bool',
    Weights: { Passing: 'number', Warning: 'number' },
    Proxy: {
      DestinationServiceName: 'string',
      DestinationServiceID: 'string',
      LocalServiceAddress: 'string',
      LocalServicePort: 'number',
      Mode: 'string',
    },
    Connect: { Native: 'bool' },
  },
  Checks: 'structs',
};

type Op =
  | '=='
  | '!='
  | 'in'
  | 'not in'
  | 'contains'
  | 'not contains'
  | 'matches'
  | 'not matches'
  | 'is empty'
  | 'is not empty';

type Node =
  | { kind: 'and' | 'or'; left: Node; right: Node }
  | { kind: 'not'; operand: Node }
  | { kind: 'match'; selector: string[]; op: Op; value?: string; at: number };

/** `text` is empty for the end. */
interface Token {
  type: 'word' | 'string' | 'punct' | 'end';
  text: string;
  at: number;
}

const OPERATORS =
  'an operator (==, !=, in, not in, contains, not contains, matches, not matches, is empty, is not empty)';

function tokenize(expr: string, fail: (at: number, why: string) => never): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i += 1;
    } else if (c === '"' || c === '`') {
      const start = i;
      let text = '';
      i += 1;
      for (;;) {
        if (i >= expr.length) fail(start, `a string not closed with ${c}`);
        const d = expr[i]!;
        if (d === c) break;
        if (d === '\\' && c === '"') {
          const e = expr[i + 1];
          const escapes: Record<string, string> = {
            n: '\n',
            t: '\t',
            r: '\r',
            '"': '"',
            '\\': '\\',
          };
          if (e === undefined || escapes[e] === undefined)
            fail(i, `an unknown escape \\${e ?? ''} in a string`);
          text += escapes[e];
          i += 2;
        } else {
          text += d;
          i += 1;
        }
      }
      i += 1;
      out.push({ type: 'string', text, at: start });
    } else if (c === '(' || c === ')' || c === '[' || c === ']' || c === '.') {
      out.push({ type: 'punct', text: c, at: i });
      i += 1;
    } else if (c === '=' || c === '!') {
      if (expr[i + 1] !== '=') fail(i, `expected ${OPERATORS}, got ${JSON.stringify(c)}`);
      out.push({ type: 'punct', text: `${c}=`, at: i });
      i += 2;
    } else {
      const m = /^[A-Za-z0-9_\-:/+]+/.exec(expr.slice(i));
      if (!m) fail(i, `an unexpected character ${JSON.stringify(c)}`);
      out.push({ type: 'word', text: m[0], at: i });
      i += m[0].length;
    }
  }
  out.push({ type: 'end', text: '', at: expr.length });
  return out;
}

/** Parses `expr` into a tree; throws FilterError naming the column of the problem. */
function parse(expr: string): Node {
  const fail = (at: number, why: string): never => {
    throw new FilterError(`filter ${JSON.stringify(expr)}: at column ${at + 1}: ${why}`);
  };
  const tokens = tokenize(expr, fail);
  let pos = 0;
  const peek = (k = 0): Token => tokens[Math.min(pos + k, tokens.length - 1)]!;
  const isWord = (t: Token, w: string) => t.type === 'word' && t.text === w;
  const describe = (t: Token) => (t.type === 'end' ? 'the end' : JSON.stringify(t.text));

  const selector = (): string[] => {
    const t = peek();
    if (t.type !== 'word' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(t.text))
      fail(t.at, `expected a selector such as Service.Meta.version, got ${describe(t)}`);
    pos += 1;
    const parts = [t.text];
    for (;;) {
      const p = peek();
      if (p.type === 'punct' && p.text === '.') {
        const n = peek(1);
        if (n.type !== 'word' || !/^[A-Za-z0-9_-]+$/.test(n.text))
          fail(n.at, `expected a field name after ".", got ${describe(n)}`);
        parts.push(n.text);
        pos += 2;
      } else if (p.type === 'punct' && p.text === '[') {
        const n = peek(1);
        const close = peek(2);
        if (n.type !== 'string' || close.type !== 'punct' || close.text !== ']')
          fail(n.at, 'expected a quoted key and "]" after "["');
        parts.push(n.text);
        pos += 3;
      } else return parts;
    }
  };

  const value = (): string => {
    const t = peek();
    const dot = peek(1);
    if (t.type === 'string') {
      pos += 1;
      return t.text;
    }
    if (
      t.type === 'word' &&
      !['and', 'or', 'not', 'in', 'is', 'contains', 'matches'].includes(t.text)
    ) {
      // a bare word ends at whitespace; `10.0.0.1` or `v1.2` are words joined by dots
      let text = t.text;
      pos += 1;
      let next = dot;
      while (
        next.type === 'punct' &&
        next.text === '.' &&
        peek(1).type === 'word' &&
        peek(1).at === next.at + 1
      ) {
        text += `.${peek(1).text}`;
        pos += 2;
        next = peek();
      }
      return text;
    }
    return fail(t.at, `expected a value (a word, a number or a quoted string), got ${describe(t)}`);
  };

  const match = (): Node => {
    const t = peek();
    if (t.type === 'punct' && t.text === '(') {
      pos += 1;
      const inner = or();
      const close = peek();
      if (close.type !== 'punct' || close.text !== ')')
        fail(close.at, `expected ")", got ${describe(close)}`);
      pos += 1;
      return inner;
    }
    if (isWord(t, 'not')) {
      pos += 1;
      return { kind: 'not', operand: match() };
    }
    // `<value> in <selector>` and `<value> not in <selector>`
    const n = peek(1);
    const valueFirst =
      t.type === 'string' || isWord(n, 'in') || (isWord(n, 'not') && isWord(peek(2), 'in'));
    if (valueFirst) {
      const v = value();
      const negated = isWord(peek(), 'not');
      if (negated) pos += 1;
      if (!isWord(peek(), 'in'))
        fail(peek().at, `expected "in" after a value, got ${describe(peek())}`);
      pos += 1;
      const sel = selector();
      return { kind: 'match', selector: sel, op: negated ? 'not in' : 'in', value: v, at: t.at };
    }
    const sel = selector();
    const o = peek();
    const op = ((): Op => {
      if (o.type === 'punct' && (o.text === '==' || o.text === '!=')) {
        pos += 1;
        return o.text;
      }
      if (isWord(o, 'is')) {
        const negated = isWord(peek(1), 'not');
        const e = peek(negated ? 2 : 1);
        if (!isWord(e, 'empty')) fail(e.at, `expected "empty" after "is", got ${describe(e)}`);
        pos += negated ? 3 : 2;
        return negated ? 'is not empty' : 'is empty';
      }
      const negated = isWord(o, 'not');
      const w = peek(negated ? 1 : 0);
      if (isWord(w, 'contains') || isWord(w, 'matches')) {
        pos += negated ? 2 : 1;
        return `${negated ? 'not ' : ''}${w.type === 'word' ? w.text : ''}` as Op;
      }
      return fail(o.at, `expected ${OPERATORS} after ${sel.join('.')}, got ${describe(o)}`);
    })();
    if (op === 'is empty' || op === 'is not empty')
      return { kind: 'match', selector: sel, op, at: t.at };
    return { kind: 'match', selector: sel, op, value: value(), at: t.at };
  };

  const and = (): Node => {
    let left = match();
    while (isWord(peek(), 'and')) {
      pos += 1;
      left = { kind: 'and', left, right: match() };
    }
    return left;
  };
  const or = (): Node => {
    let left = and();
    while (isWord(peek(), 'or')) {
      pos += 1;
      left = { kind: 'or', left, right: and() };
    }
    return left;
  };

  if (expr.trim() === '') fail(0, 'the expression is empty');
  const tree = or();
  if (peek().type !== 'end')
    fail(peek().at, `expected "and", "or" or the end, got ${describe(peek())}`);
  return tree;
}

/** The fields a schema level offers, for error messages. */
function fieldList(level: FilterSchema, prefix: string): string[] {
  return Object.entries(level).flatMap(([k, v]) =>
    typeof v === 'object'
      ? fieldList(v, `${prefix}${k}.`)
      : [`${prefix}${k}${v === 'map' ? '.<key>' : ''}`],
  );
}

type Predicate = (entry: unknown) => boolean;

/** One match compiled against its field's type. */
function compileMatch(
  expr: string,
  m: Extract<Node, { kind: 'match' }>,
  schema: FilterSchema,
): Predicate {
  const where = `filter ${JSON.stringify(expr)}: at column ${m.at + 1}: ${m.selector.join('.')}`;
  const bad = (why: string): never => {
    throw new FilterError(`${where} ${why}`);
  };
  // walk the schema: a map consumes one more part (the key), which must be the last
  let type: FieldType = schema;
  let mapKey: string | undefined;
  for (const [i, part] of m.selector.entries()) {
    if (typeof type === 'object') {
      const next: FieldType | undefined = type[part];
      if (next === undefined)
        bad(`is not a field of the entry; fields: ${fieldList(schema, '').join(', ')}`);
      type = next as FieldType;
    } else if (type === 'map' && i === m.selector.length - 1) {
      mapKey = part;
      type = 'string';
    } else if (type === 'structs') {
      bad(
        'selects a field through a list; go-bexpr cannot, and neither can Remora (only `is empty` applies to the list)',
      );
    } else bad(`goes past a ${type} field`);
  }
  if (typeof type === 'object') bad('is a group of fields; select one of them');
  const path = mapKey === undefined ? m.selector : m.selector.slice(0, -1);
  /** A scalar field as text (a string field holding something else reads as empty). */
  const text = (e: unknown): string => {
    const v = read(e);
    return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
      ? String(v)
      : '';
  };
  const read = (entry: unknown): unknown => {
    let v = entry;
    for (const p of path)
      v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
    if (mapKey === undefined) return v;
    return v !== null && typeof v === 'object' && Object.hasOwn(v, mapKey)
      ? (v as Record<string, unknown>)[mapKey]
      : undefined;
  };
  const op = m.op;
  const negate = op.startsWith('not ') || op === '!=' || op === 'is not empty';
  const base = (p: Predicate): Predicate => (negate ? (e) => !p(e) : p);
  const value = m.value ?? '';
  const t = type as Exclude<FieldType, object>;
  const unsupported = (): never =>
    bad(
      `is a ${t === 'strings' ? 'list of strings' : t === 'structs' ? 'list' : t}, which ${op} does not apply to`,
    );

  if (op === 'is empty' || op === 'is not empty') {
    return base((e) => {
      const v = read(e);
      if (v === undefined || v === null || v === '') return true;
      if (Array.isArray(v)) return v.length === 0;
      if (typeof v === 'object') return Object.keys(v).length === 0;
      return false;
    });
  }
  if (op === '==' || op === '!=') {
    if (t === 'number') {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n))
        bad(`is a number, and ${JSON.stringify(value)} is not one`);
      return base((e) => Number(read(e) ?? 0) === n);
    }
    if (t === 'bool') {
      if (value !== 'true' && value !== 'false')
        bad(`is true or false, not ${JSON.stringify(value)}`);
      return base((e) => Boolean(read(e) ?? false) === (value === 'true'));
    }
    if (t !== 'string') return unsupported();
    return base((e) => text(e) === value);
  }
  if (op === 'in' || op === 'not in' || op === 'contains' || op === 'not contains') {
    if (t === 'strings')
      return base((e) => {
        const v = read(e);
        return Array.isArray(v) && v.includes(value);
      });
    if (t === 'map')
      return base((e) => {
        const v = read(e);
        return v !== null && typeof v === 'object' && Object.hasOwn(v, value);
      });
    if (t !== 'string') return unsupported();
    return base((e) => text(e).includes(value));
  }
  // matches, not matches
  if (t !== 'string') return unsupported();
  let re: RegExp;
  try {
    re = new RegExp(value, 'u');
  } catch (err) {
    return bad(`matches a regular expression that does not compile: ${(err as Error).message}`);
  }
  return base((e) => {
    const v = read(e);
    // an absent map key meets no `matches` (and every `not matches`)
    return v !== undefined && re.test(text(e));
  });
}

function compileNode(expr: string, n: Node, schema: FilterSchema): Predicate {
  if (n.kind === 'match') return compileMatch(expr, n, schema);
  if (n.kind === 'not') {
    const p = compileNode(expr, n.operand, schema);
    return (e) => !p(e);
  }
  const l = compileNode(expr, n.left, schema);
  const r = compileNode(expr, n.right, schema);
  return n.kind === 'and' ? (e) => l(e) && r(e) : (e) => l(e) || r(e);
}

/**
 * Throws FilterError when `expr` does not parse. Consul checks only this when a resolver subset's
 * filter is written (its selectors meet the entries' fields when the filter runs).
 */
export function checkFilterSyntax(expr: string): void {
  parse(expr);
}

/**
 * `expr` compiled into a predicate over entries of `schema`'s shape; throws FilterError when it
 * does not parse, selects a field the schema lacks, or compares a field with a value of another
 * type.
 */
export function compileFilter(expr: string, schema: FilterSchema): (entry: unknown) => boolean {
  return compileNode(expr, parse(expr), schema);
}
