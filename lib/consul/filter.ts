// Consul's filter language, as a service-resolver subset's `Filter` and the HTTP API's `?filter=`
// use it: `Service.Meta.version == v1 and "canary" not in Service.Tags`. An expression is parsed
// once, every selector is checked against a schema of the entries it runs on (as Consul does when
// it creates a filter for an endpoint), and the result is a predicate over a plain JSON object of
// Consul's API shape.
//
// The language is go-bexpr v0.1.2, the version Consul pins (its go.mod); what follows is read
// from that version's grammar.peg, field_config.go, validate.go, coerce.go and evaluate.go.
//
// Syntax (grammar.peg):
// - `or`, `and`, `not` and parentheses, in that order of precedence; keywords are lowercase and
//   stand between spaces (`a == 1 and(b == 2)` is refused).
// - Matches: `Sel == V`, `Sel != V`, `Sel contains V`, `Sel not contains V`, `V in Sel`,
//   `V not in Sel`, `Sel matches V`, `Sel not matches V`, `Sel is empty`, `Sel is not empty`.
// - A selector is names of ASCII letters, digits and `_` (starting with a letter) joined by `.`,
//   or a quoted key in brackets: `Service.Meta["remora-node"]`. JSON-pointer selectors
//   (`"/Service/Meta/x"`, go-bexpr v0.1.3) and `any`/`all` (v0.1.13) are not in Consul's
//   language; a JSON pointer is refused with a message that says so.
// - A value is a quoted string (`"…"` with Go's escapes, where `"` always ends the string, or a
//   raw `` `…` ``), a number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, followed by a space, `)` or the
//   end), or a bare word shaped like a selector (`v1`, `a.b`). So `node-a` and `10.0.0.1` must
//   be quoted, as in Consul.
//
// Semantics (field_config.go, evaluate.go):
// - A string field takes `==`, `!=`, `in`/`contains` (substring) and `matches`; a number or bool
//   field only `==` and `!=`, with the value coerced to the field's type when the filter is
//   compiled (a number is a Go int: strconv.ParseInt base 0, so "0x50" is 80; a bool takes Go's
//   ParseBool spellings); a list of strings takes `in`/`contains` (an element equal to the value)
//   and `is empty`; a map takes `in`/`contains` (a key equal to the value) and `is empty`.
//   `is empty` does not apply to a string (compare with `== ""`).
// - `matches` is an RE2 expression, unanchored (Go's Match); it runs as a JS RegExp (with the few
//   RE2 spellings JS lacks translated), and one JS cannot compile, or that uses what RE2 refuses
//   (lookaround, backreferences), is refused.
// - A map key that is absent: `==`, `in`/`contains` and `is not empty` are false; `!=`,
//   `not in`/`not contains`, `is empty`, and both `matches` and `not matches`, are true
//   (evaluateMatchExpressionRecurse's map branch returns true for every operator it does not name
//   as false, so an absent key "matches" any pattern).
// - A list of structs (`Checks`, `Service.Proxy.Upstreams`) takes `is empty` itself, and a
//   selector through it tests each element: true when any element meets the match, so
//   `Checks.Status == critical` is "some check is critical", `Checks.Status != passing` is "some
//   check is not passing" (false with no checks), and `not Checks.Status == critical` is "no check
//   is critical" (evaluate.go: "operations on slices are implicitly ANY operations").
// - A field absent from the JSON reads as Go's zero value ("", 0, false, empty list or map), as
//   Consul's structs would hold it.

/** The type of a field an expression may select. */
export type FieldType =
  | 'string'
  | 'number'
  | 'bool'
  /** A list of strings. */
  | 'strings'
  /** A map of strings. */
  | 'map'
  /** A struct: its fields by name. */
  | Fields
  /** A list of structs. */
  | { readonly $list: Fields }
  /** A map of structs. */
  | { readonly $map: Fields };

/** The fields of a struct. Names starting with `$` are the markers above, never fields. */
export interface Fields {
  readonly [field: string]: FieldType;
}

/** The fields of the entries an expression runs on, and what an entry is called in errors. */
export interface FilterSchema {
  readonly name: string;
  readonly fields: Fields;
}

/** An expression that does not parse, or does not fit the schema it is compiled for. */
export class FilterError extends Error {
  override name = 'FilterError';
}

/**
 * An entry of `/v1/health/service/<name>` or `/v1/health/connect/<name>` (CheckServiceNode), with
 * the selectors Consul documents for filtering them.
 */
export const HEALTH_ENTRY_SCHEMA: FilterSchema = {
  name: 'a health entry',
  fields: {
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
      TaggedAddresses: { $map: { Address: 'string', Port: 'number' } },
      Meta: 'map',
      Port: 'number',
      Weights: { Passing: 'number', Warning: 'number' },
      EnableTagOverride: 'bool',
      Proxy: {
        DestinationServiceName: 'string',
        DestinationServiceID: 'string',
        LocalServiceAddress: 'string',
        LocalServicePort: 'number',
        Mode: 'string',
        TransparentProxy: { OutboundListenerPort: 'number' },
        MeshGateway: { Mode: 'string' },
        Upstreams: {
          $list: {
            DestinationType: 'string',
            DestinationNamespace: 'string',
            DestinationName: 'string',
            Datacenter: 'string',
            LocalBindAddress: 'string',
            LocalBindPort: 'number',
            MeshGateway: { Mode: 'string' },
          },
        },
      },
      Connect: { Native: 'bool' },
    },
    Checks: {
      $list: {
        Node: 'string',
        CheckID: 'string',
        Name: 'string',
        Status: 'string',
        Notes: 'string',
        Output: 'string',
        ServiceID: 'string',
        ServiceName: 'string',
        ServiceTags: 'strings',
      },
    },
  },
};

// ------------------------------------------------------------------ tokens

type TokenKind = 'ident' | 'number' | 'string' | '(' | ')' | '[' | ']' | '.' | '==' | '!=' | 'end';

interface Token {
  kind: TokenKind;
  /** As written; for a string, its value. */
  text: string;
  at: number;
  /** Whitespace (or the start) comes right before it. */
  spaced: boolean;
}

type Fail = (at: number, why: string) => never;

const OPERATORS =
  'an operator (==, !=, in, not in, contains, not contains, matches, not matches, is empty, is not empty)';
const WHITESPACE = /[ \t\r\n]/;
const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;
const GO_ESCAPES: Record<string, number> = {
  a: 7,
  b: 8,
  f: 12,
  n: 10,
  r: 13,
  t: 9,
  v: 11,
  '\\': 92,
};

/** The text of a double-quoted string, unescaped as Go's strconv.Unquote does (as bytes). */
function unquote(raw: string, at: number, fail: Fail): string {
  const bytes: number[] = [];
  for (let i = 0; i < raw.length;) {
    const c = raw[i]!;
    if (c === '\n') fail(at + i, 'a double-quoted string cannot span lines (write \\n)');
    if (c !== '\\') {
      const cp = raw.codePointAt(i)!;
      bytes.push(...Buffer.from(String.fromCodePoint(cp)));
      i += cp > 0xffff ? 2 : 1;
      continue;
    }
    const e = raw[i + 1];
    const hex = (n: number): number => {
      const digits = raw.slice(i + 2, i + 2 + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(digits))
        fail(at + i, `\\${e} needs ${n} hex digits`);
      return parseInt(digits, 16);
    };
    if (e === undefined)
      fail(at + i, 'a double-quoted string cannot hold " (not even as \\"); use a `raw string`');
    else if (GO_ESCAPES[e] !== undefined) {
      bytes.push(GO_ESCAPES[e]);
      i += 2;
    } else if (e === 'x') {
      bytes.push(hex(2));
      i += 4;
    } else if (e === 'u' || e === 'U') {
      const n = e === 'u' ? 4 : 8;
      const cp = hex(n);
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        fail(at + i, `\\${e}${raw.slice(i + 2, i + 2 + n)} is not a Unicode code point`);
      bytes.push(...Buffer.from(String.fromCodePoint(cp)));
      i += 2 + n;
    } else if (
      /^[0-7]{3}$/.test(raw.slice(i + 1, i + 4)) &&
      parseInt(raw.slice(i + 1, i + 4), 8) < 256
    ) {
      bytes.push(parseInt(raw.slice(i + 1, i + 4), 8));
      i += 4;
    } else fail(at + i, `an unknown escape \\${e} in a string`);
  }
  return Buffer.from(bytes).toString('utf8');
}

function tokenize(expr: string, fail: Fail): Token[] {
  const out: Token[] = [];
  const wordy = (t: Token | undefined) =>
    t !== undefined && (t.kind === 'ident' || t.kind === 'number' || t.kind === 'string');
  let i = 0;
  let spaced = true;
  while (i < expr.length) {
    const c = expr[i]!;
    if (WHITESPACE.test(c)) {
      i += 1;
      spaced = true;
      continue;
    }
    const at = i;
    const prev = out.at(-1);
    if (!spaced && wordy(prev) && !'()[].=!'.includes(c)) {
      if (prev!.kind === 'string')
        fail(at, `expected a space after the string ${JSON.stringify(prev!.text)}`);
      if (c === '"' || c === '`') fail(at, 'expected a space before the string');
      // `node-a`, `Meta.remora-node`: Consul reads a word, then meets a character it cannot place
      const run = expr.slice(prev!.at).split(/[ \t\r\n()]/)[0]!;
      fail(
        at,
        `unexpected ${JSON.stringify(c)} in ${run}: a bare word is letters, digits and underscores; quote a value such as ${JSON.stringify(run)}, and select a map key such as that with [${JSON.stringify(run)}]`,
      );
    }
    let t: Token;
    if ('()[].'.includes(c)) {
      t = { kind: c as TokenKind, text: c, at, spaced };
      i += 1;
    } else if ((c === '=' || c === '!') && expr[i + 1] === '=') {
      t = { kind: `${c}=`, text: `${c}=`, at, spaced };
      i += 2;
    } else if (c === '=' || c === '!') {
      return fail(at, `expected ${OPERATORS}, got ${JSON.stringify(c)}`);
    } else if (c === '"' || c === '`') {
      const end = expr.indexOf(c, i + 1);
      if (end === -1) fail(at, `a string not closed with ${c}`);
      const raw = expr.slice(i + 1, end);
      const text = c === '`' ? raw.replaceAll('\r', '') : unquote(raw, i + 1, fail);
      t = { kind: 'string', text, at, spaced };
      i = end + 1;
    } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(expr[i + 1] ?? ''))) {
      const run = /^[^ \t\r\n()]+/.exec(expr.slice(i))![0];
      if (!NUMBER.test(run))
        fail(
          at,
          `${run} is not a number (a number is followed by a space, ")" or the end); quote a value such as "${run}"`,
        );
      t = { kind: 'number', text: run, at, spaced };
      i += run.length;
    } else if (/[A-Za-z]/.test(c)) {
      const word = /^[A-Za-z][A-Za-z0-9_]*/.exec(expr.slice(i))![0];
      t = { kind: 'ident', text: word, at, spaced };
      i += word.length;
    } else return fail(at, `an unexpected character ${JSON.stringify(c)}`);
    out.push(t);
    spaced = false;
  }
  out.push({ kind: 'end', text: '', at: expr.length, spaced: true });
  return out;
}

// ------------------------------------------------------------------ parser

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

interface Match {
  kind: 'match';
  selector: string[];
  op: Op;
  value?: string;
  /** Where the selector and the value start. */
  at: number;
  valueAt: number;
}

type Node =
  { kind: 'and' | 'or'; left: Node; right: Node } | { kind: 'not'; operand: Node } | Match;

/** Parses `expr` into a tree; throws FilterError naming the column of the problem. */
function parse(expr: string): Node {
  const fail: Fail = (at, why) => {
    throw new FilterError(`filter ${JSON.stringify(expr)}: at column ${at + 1}: ${why}`);
  };
  if (expr.trim() === '') fail(0, 'the expression is empty');
  const tokens = tokenize(expr, fail);
  let pos = 0;
  const peek = (k = 0): Token => tokens[Math.min(pos + k, tokens.length - 1)]!;
  const isWord = (t: Token, ...words: string[]) => t.kind === 'ident' && words.includes(t.text);
  const describe = (t: Token) =>
    t.kind === 'end'
      ? 'the end'
      : t.kind === 'string'
        ? `the string ${JSON.stringify(t.text)}`
        : JSON.stringify(t.text);
  /** Consumes the keyword at peek(), which stands between spaces. */
  const keyword = (spaceBefore = true, spaceAfter = true): void => {
    const t = peek();
    const n = peek(1);
    if (spaceBefore && !t.spaced) fail(t.at, `expected a space before "${t.text}"`);
    if (spaceAfter && !n.spaced) fail(n.at, `expected a space after "${t.text}"`);
    pos += 1;
  };

  const pointer = (t: Token): never =>
    fail(
      t.at,
      'JSON-pointer selectors are not in the filter language Consul speaks (go-bexpr v0.1.2); write Service.Meta["key"]',
    );

  const selector = (): string[] => {
    const t = peek();
    if (t.kind === 'string' && t.text.startsWith('/')) pointer(t);
    if (t.kind !== 'ident')
      fail(t.at, `expected a selector such as Service.Meta.version, got ${describe(t)}`);
    pos += 1;
    const parts = [t.text];
    for (;;) {
      const p = peek();
      if (p.spaced) return parts;
      if (p.kind === '.') {
        const n = peek(1);
        if (n.kind !== 'ident' || n.spaced) {
          const run = expr.slice(t.at).split(/[ \t\r\n()]/)[0];
          fail(
            n.at,
            `expected a field name right after ".", got ${describe(n)} (quote a value such as "${run}")`,
          );
        }
        parts.push(n.text);
        pos += 2;
      } else if (p.kind === '[') {
        const n = peek(1);
        if (n.kind !== 'string') fail(n.at, `expected a quoted key after "[", got ${describe(n)}`);
        if (peek(2).kind !== ']')
          fail(peek(2).at, `expected "]" after the key, got ${describe(peek(2))}`);
        parts.push(n.text);
        pos += 3;
      } else return parts;
    }
  };

  /** A value: a quoted string, a number, or a bare word shaped like a selector (its parts joined by dots). */
  const value = (): string => {
    const t = peek();
    if (t.kind === 'string' || t.kind === 'number') {
      pos += 1;
      return t.text;
    }
    if (t.kind === 'ident') return selector().join('.');
    return fail(t.at, `expected a value (a word, a number or a quoted string), got ${describe(t)}`);
  };

  /** `in` or `not in` at peek(). */
  const inOp = (): boolean =>
    isWord(peek(), 'in') || (isWord(peek(), 'not') && isWord(peek(1), 'in'));
  const takeIn = (): Op => {
    const negated = isWord(peek(), 'not');
    if (negated) keyword();
    keyword();
    return negated ? 'not in' : 'in';
  };

  const operator = (sel: string[]): Op => {
    const o = peek();
    if (o.kind === '==' || o.kind === '!=') {
      pos += 1;
      return o.kind;
    }
    if (isWord(o, 'is')) {
      keyword();
      const negated = isWord(peek(), 'not');
      if (negated) keyword();
      if (!isWord(peek(), 'empty'))
        fail(
          peek().at,
          `expected "empty" after "${negated ? 'is not' : 'is'}", got ${describe(peek())}`,
        );
      keyword(true, false);
      return negated ? 'is not empty' : 'is empty';
    }
    const negated = isWord(o, 'not');
    const w = peek(negated ? 1 : 0);
    if (isWord(w, 'contains', 'matches')) {
      if (negated) keyword();
      keyword();
      return `${negated ? 'not ' : ''}${w.text}` as Op;
    }
    return fail(o.at, `expected ${OPERATORS} after ${sel.join('.')}, got ${describe(o)}`);
  };

  const match = (): Node => {
    const t = peek();
    if (t.kind === '(') {
      pos += 1;
      const inner = or();
      if (peek().kind !== ')') fail(peek().at, `expected ")", got ${describe(peek())}`);
      pos += 1;
      return inner;
    }
    // `not` is a prefix unless an operator follows it (then it is a word: `not in Service.Tags`)
    if (
      isWord(t, 'not') &&
      !isWord(peek(1), 'in', 'contains', 'matches', 'is') &&
      peek(1).kind !== '==' &&
      peek(1).kind !== '!='
    ) {
      keyword(false, true);
      return { kind: 'not', operand: match() };
    }
    if (t.kind === 'string' && t.text.startsWith('/') && !isWord(peek(1), 'in', 'not')) pointer(t);
    if (t.kind === 'string' || t.kind === 'number') {
      const v = value();
      if (!inOp())
        fail(peek().at, `expected "in" or "not in" after a value, got ${describe(peek())}`);
      const op = takeIn();
      const at = peek().at;
      return { kind: 'match', selector: selector(), op, value: v, at, valueAt: t.at };
    }
    const first = selector();
    if (inOp()) {
      // `v1 in Service.Tags`: the word was a value
      const op = takeIn();
      const at = peek().at;
      return { kind: 'match', selector: selector(), op, value: first.join('.'), at, valueAt: t.at };
    }
    const op = operator(first);
    if (op === 'is empty' || op === 'is not empty')
      return { kind: 'match', selector: first, op, at: t.at, valueAt: t.at };
    const valueAt = peek().at;
    return { kind: 'match', selector: first, op, value: value(), at: t.at, valueAt };
  };

  const and = (): Node => {
    let left = match();
    while (isWord(peek(), 'and')) {
      keyword();
      left = { kind: 'and', left, right: match() };
    }
    return left;
  };
  const or = (): Node => {
    let left = and();
    while (isWord(peek(), 'or')) {
      keyword();
      left = { kind: 'or', left, right: and() };
    }
    return left;
  };

  const tree = or();
  if (peek().kind !== 'end')
    fail(peek().at, `expected "and", "or" or the end, got ${describe(peek())}`);
  return tree;
}

// ------------------------------------------------------------------ regular expressions

/**
 * An RE2 pattern as a JS RegExp, with the RE2 spellings JS lacks translated: a leading `(?ims)`
 * (JS flags), `(?P<name>`, `\A`, `\z`, `\pL`, `\x{…}`, `\a`, an escaped punctuation character,
 * a `{` or `}` that is no repetition, a `]` first in a class. Returns the reason instead for what
 * RE2 refuses but JS would run (lookaround, backreferences), or what JS cannot compile.
 */
function toRegExp(pattern: string): RegExp | string {
  let flags = 'u';
  let src = pattern;
  const lead = /^\(\?([a-zA-Z]+)\)/.exec(src);
  if (lead) {
    if (!/^[ims]+$/.test(lead[1]!))
      return `the flags (?${lead[1]}) are not supported (i, m and s are)`;
    flags += lead[1];
    src = src.slice(lead[0].length);
  }
  let out = '';
  let inClass = false;
  for (let i = 0; i < src.length; i += 1) {
    const c = src[i]!;
    if (c === '\\') {
      const e = src[i + 1] ?? '';
      i += 1;
      if (/[1-9]/.test(e)) return 'backreferences are not supported (RE2)';
      const braced = /^\{([0-9a-fA-F]{1,6})\}/.exec(src.slice(i + 1));
      if (e === 'x' && braced) {
        out += `\\u{${braced[1]}}`;
        i += braced[0].length;
      } else if (e === 'a') out += '\\x07';
      else if (e === 'A' && !inClass) out += '(?<![\\s\\S])';
      else if (e === 'z' && !inClass) out += '(?![\\s\\S])';
      else if ((e === 'p' || e === 'P') && /[A-Za-z]/.test(src[i + 1] ?? '')) {
        out += `\\${e}{${src[i + 1]}}`;
        i += 1;
      } else if (/[!-/:-@[-`{-~]/.test(e))
        out += `\\x${e.charCodeAt(0).toString(16).padStart(2, '0')}`;
      else out += `\\${e}`;
    } else if (inClass) {
      if (c === '[' && src[i + 1] === ':')
        return 'POSIX classes such as [[:alpha:]] are not supported';
      if (c === ']') inClass = false;
      out += c;
    } else if (c === '[') {
      inClass = true;
      const neg = src[i + 1] === '^';
      out += neg ? '[^' : '[';
      if (neg) i += 1;
      if (src[i + 1] === ']') {
        out += '\\]';
        i += 1;
      }
    } else if (c === '(' && /^\(\?(=|!|<=|<!)/.test(src.slice(i))) {
      return 'lookahead and lookbehind are not supported (RE2)';
    } else if (c === '(' && src.startsWith('(?P<', i)) {
      out += '(?<';
      i += 3;
    } else if (c === '{') {
      const rep = /^\{[0-9]+(,[0-9]*)?\}/.exec(src.slice(i));
      if (rep) {
        out += rep[0];
        i += rep[0].length - 1;
      } else out += '\\{';
    } else if (c === '}') out += '\\}';
    else out += c;
  }
  try {
    return new RegExp(out, flags);
  } catch (err) {
    return (err as Error).message;
  }
}

// ------------------------------------------------------------------ compiler

type Predicate = (v: unknown) => boolean;
type Kind = 'string' | 'number' | 'bool' | 'strings' | 'map' | 'list' | 'struct' | 'mapOf';

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

function kindOf(t: FieldType): Kind {
  if (typeof t === 'string') return t;
  if (Object.hasOwn(t, '$list')) return 'list';
  if (Object.hasOwn(t, '$map')) return 'mapOf';
  return 'struct';
}

const OPS: Record<Kind, readonly Op[]> = {
  string: ['==', '!=', 'in', 'not in', 'contains', 'not contains', 'matches', 'not matches'],
  number: ['==', '!='],
  bool: ['==', '!='],
  strings: ['in', 'not in', 'contains', 'not contains', 'is empty', 'is not empty'],
  map: ['in', 'not in', 'contains', 'not contains', 'is empty', 'is not empty'],
  mapOf: ['in', 'not in', 'contains', 'not contains', 'is empty', 'is not empty'],
  list: ['is empty', 'is not empty'],
  struct: [],
};

const KIND_NAMES: Record<Kind, string> = {
  string: 'a string',
  number: 'a number',
  bool: 'true or false',
  strings: 'a list of strings',
  map: 'a map',
  mapOf: 'a map',
  list: 'a list',
  struct: 'a group of fields',
};

/** What an absent map key makes of each operator (evaluate.go, the map branch). */
const ABSENT_KEY: Record<Op, boolean> = {
  '==': false,
  in: false,
  contains: false,
  'is not empty': false,
  '!=': true,
  'not in': true,
  'not contains': true,
  'is empty': true,
  matches: true,
  'not matches': true,
};

/** The selectors under `fields`, prefixed, for error messages. */
function fieldList(fields: Fields, prefix: string): string[] {
  return Object.entries(fields).flatMap(([k, t]) => {
    const name = `${prefix}${k}`;
    const kind = kindOf(t);
    if (kind === 'struct') return fieldList(t as Fields, `${name}.`);
    if (kind === 'list') return [name, ...fieldList((t as { $list: Fields }).$list, `${name}.`)];
    if (kind === 'mapOf')
      return [name, ...fieldList((t as { $map: Fields }).$map, `${name}.<key>.`)];
    return kind === 'map' ? [name, `${name}.<key>`] : [name];
  });
}

/** Go's strconv.ParseInt(v, 0, 64), or undefined. */
function parseGoInt(v: string): number | undefined {
  const m =
    /^([+-]?)(0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)$/.exec(
      v,
    );
  if (!m) return undefined;
  let digits = m[2]!.replaceAll('_', '');
  if (/^0[0-7]/.test(digits)) digits = `0o${digits.slice(1)}`;
  const n = BigInt(digits) * (m[1] === '-' ? -1n : 1n);
  return n >= -(2n ** 63n) && n < 2n ** 63n ? Number(n) : undefined;
}

/** Go's strconv.ParseBool. */
function parseGoBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

/** One match compiled against the schema: its selector walked, its operator and value checked. */
function compileMatch(expr: string, m: Match, schema: FilterSchema): Predicate {
  const bad: (at: number, why: string) => never = (at, why) => {
    throw new FilterError(`filter ${JSON.stringify(expr)}: at column ${at + 1}: ${why}`);
  };
  const path = m.selector;
  const name = (n: number): string =>
    path
      .slice(0, n)
      .map((p, i) =>
        /^[A-Za-z][A-Za-z0-9_]*$/.test(p) ? `${i > 0 ? '.' : ''}${p}` : `[${JSON.stringify(p)}]`,
      )
      .join('');
  const op = m.op;
  const value = m.value ?? '';
  const negated = op === '!=' || op.startsWith('not ') || op === 'is not empty';

  const leaf = (type: FieldType): Predicate => {
    const kind = kindOf(type);
    const sel = name(path.length);
    if (kind === 'struct')
      bad(
        m.at,
        `${sel} is a group of fields; select one: ${fieldList(type as Fields, `${sel}.`).join(', ')}`,
      );
    if (!OPS[kind].includes(op)) {
      const hint =
        kind === 'string' && op.endsWith('empty')
          ? `; compare with ${op === 'is empty' ? '==' : '!='} "" instead`
          : kind === 'list'
            ? `; or select a field of its elements: ${fieldList((type as { $list: Fields }).$list, `${sel}.`).join(', ')}`
            : '';
      bad(
        m.at,
        `${sel} is ${KIND_NAMES[kind]}: "${op}" does not apply to it (${OPS[kind].join(', ')} do)${hint}`,
      );
    }
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    let test: Predicate;
    if (op === 'is empty' || op === 'is not empty')
      test =
        kind === 'list' || kind === 'strings'
          ? (v) => !Array.isArray(v) || v.length === 0
          : (v) => !isObject(v) || Object.keys(v).length === 0;
    else if (op === '==' || op === '!=') {
      if (kind === 'number') {
        const n = parseGoInt(value);
        if (n === undefined)
          bad(m.valueAt, `${sel} is a number, and ${JSON.stringify(value)} is not one`);
        test = (v) => (typeof v === 'number' ? v : 0) === n;
      } else if (kind === 'bool') {
        const b = parseGoBool(value);
        if (b === undefined)
          bad(m.valueAt, `${sel} is true or false, not ${JSON.stringify(value)}`);
        test = (v) => (typeof v === 'boolean' ? v : false) === b;
      } else test = (v) => str(v) === value;
    } else if (op === 'matches' || op === 'not matches') {
      const re = toRegExp(value);
      if (typeof re === 'string')
        bad(
          m.valueAt,
          `${JSON.stringify(value)} is not a regular expression Remora can run: ${re}`,
        );
      test = (v) => re.test(str(v));
    } else if (kind === 'string') test = (v) => str(v).includes(value);
    else if (kind === 'strings') test = (v) => Array.isArray(v) && v.includes(value);
    else test = (v) => isObject(v) && Object.hasOwn(v, value);
    return negated ? (v) => !test(v) : test;
  };

  const walk = (type: FieldType, depth: number): Predicate => {
    if (depth === path.length) return leaf(type);
    const part = path[depth]!;
    const kind = kindOf(type);
    if (kind === 'struct') {
      const fields = type as Fields;
      const next = part.startsWith('$') || !Object.hasOwn(fields, part) ? undefined : fields[part];
      if (next === undefined)
        return bad(
          m.at,
          `${name(depth + 1)} is not a field of ${schema.name}; fields: ${fieldList(fields, depth === 0 ? '' : `${name(depth)}.`).join(', ')}`,
        );
      const inner = walk(next, depth + 1);
      return (v) => inner(isObject(v) && Object.hasOwn(v, part) ? v[part] : undefined);
    }
    if (kind === 'list') {
      // a selector through a list of structs holds when it holds for any element
      const each = walk((type as { $list: Fields }).$list, depth);
      return (v) => Array.isArray(v) && v.some(each);
    }
    if (kind === 'map' || kind === 'mapOf') {
      const inner = walk(kind === 'map' ? 'string' : (type as { $map: Fields }).$map, depth + 1);
      const absent = ABSENT_KEY[op];
      return (v) => (isObject(v) && Object.hasOwn(v, part) ? inner(v[part]) : absent);
    }
    return bad(
      m.at,
      `${name(depth)} is ${KIND_NAMES[kind]}; it has no field ${JSON.stringify(part)}`,
    );
  };
  return walk(schema.fields, 0);
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
 * Throws FilterError when `expr` does not parse. This is all Consul checks when a resolver
 * subset's filter is written (config_entry_discoverychain.go creates the evaluator without a
 * type): its selectors, values and regular expressions meet the entries' fields when it runs.
 */
export function checkFilterSyntax(expr: string): void {
  parse(expr);
}

/**
 * `expr` compiled into a predicate over entries of `schema`'s shape; throws FilterError when it
 * does not parse, selects a field the schema lacks, applies an operator its field does not take,
 * compares a field with a value of another type, or matches a regular expression that does not
 * compile. An empty expression is an error: callers treat "no filter" themselves, as Consul does.
 */
export function compileFilter(expr: string, schema: FilterSchema): (entry: unknown) => boolean {
  return compileNode(expr, parse(expr), schema);
}
