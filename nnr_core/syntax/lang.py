"""Parser of the ``spec/syntax/*.syntax`` tables (the syntax of ISO/IEC 15938-17 as data).

The language (see spec/README.md) is indentation based, one statement per line::

    const NAME = EXPR                      # top level: a named constant
    struct_name(param, ...):               # top level: a syntax structure
        element[idx]...   DESC  [range LO..HI] [reserved V] [default EXPR]
        if EXPR: / elif EXPR: / else:
        for VAR in EXPR:
        call NAME(ARGS) [as FIELD]         # as FIELD: a nested dict; without: same dict
        let TARGET = EXPR                  # derived variable (recomputed/checked on write)
        infer TARGET = EXPR                # value of an element absent from the stream
        array NAME[, NAME...]              # lists that exist even when a loop runs 0 times
        check EXPR [-> ErrorClass "message"]
        error ErrorClass "message"
        hook NAME                          # a call-out to the application (out-of-band values)
        byte_alignment()

DESC is u(EXPR), i(EXPR), ue(EXPR), ie(EXPR), flt or st. Expressions are Python expressions,
compiled once here and evaluated by ``walker`` in an explicit environment.
"""
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import nnr_core.errors as _errors


class SyntaxFileError(Exception):
    """A .syntax table is malformed (a bug in spec/, never in a bitstream)."""


# -- AST ------------------------------------------------------------------------------------
@dataclass
class Expr:
    text: str
    code: object


@dataclass
class Elem:
    name: str
    index: list            # [Expr]
    kind: str              # u, i, ue, ie, flt, st
    arg: Optional[Expr]
    lo: Optional[Expr] = None
    hi: Optional[Expr] = None
    reserved: Optional[Expr] = None
    default: Optional[Expr] = None
    where: str = ""


@dataclass
class If:
    branches: list         # [(Expr, body)]
    orelse: list = field(default_factory=list)


@dataclass
class For:
    var: str
    iterable: Expr
    body: list


@dataclass
class Call:
    struct: str
    args: list             # [Expr]
    as_field: Optional[str]
    where: str = ""


@dataclass
class Let:
    name: str
    index: list
    expr: Expr
    infer: bool = False


@dataclass
class Array:
    targets: list          # [(name, [Expr])]


@dataclass
class Check:
    expr: Expr
    error: type
    message: str


@dataclass
class Error:
    error: type
    message: str


@dataclass
class Hook:
    name: str


@dataclass
class Align:
    pass


@dataclass
class Struct:
    name: str
    params: list
    body: list
    source: str


@dataclass
class SyntaxTables:
    structs: dict
    constants: dict
    files: list


# -- parsing ----------------------------------------------------------------------------------
_IDENT = r"[A-Za-z_]\w*"
_RE_STRUCT = re.compile(rf"^({_IDENT})\s*(?:\(([^)]*)\))?\s*:$")
_RE_CONST = re.compile(rf"^const\s+({_IDENT})\s*=\s*(.+)$")
_RE_TARGET = re.compile(rf"^({_IDENT})((?:\[[^\]]+\])*)$")
_RE_ELEM = re.compile(rf"^({_IDENT}(?:\[[^\]]+\])*)\s+(u|i|ue|ie|flt|st)\b(\(([^()]*(?:\([^()]*\)[^()]*)*)\))?(.*)$")
_RE_CALL = re.compile(rf"^call\s+({_IDENT})\s*\((.*)\)(?:\s+as\s+({_IDENT}))?$")
_RE_ERRMSG = re.compile(rf"^({_IDENT})\s+\"(.*)\"$")


def _compile(text, where):
    text = text.strip()
    try:
        return Expr(text, compile(text, where, "eval"))
    except SyntaxError as exc:
        raise SyntaxFileError(f"{where}: bad expression {text!r}: {exc.msg}") from None


def _split_args(text):
    """Split a comma-separated argument list at top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [a.strip() for a in out]


def _target(text, where):
    m = _RE_TARGET.match(text.strip())
    if not m:
        raise SyntaxFileError(f"{where}: bad target {text!r}")
    idx = re.findall(r"\[([^\]]+)\]", m.group(2))
    return m.group(1), [_compile(i, where) for i in idx]


def _error_class(name, where):
    cls = getattr(_errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, _errors.NNRError)):
        raise SyntaxFileError(f"{where}: unknown error class {name!r}")
    return cls


def _strip_comment(line):
    out, quoted = "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == "#" and not quoted:
            break
        out += ch
    return out.rstrip()


def _parse_elem(m, where):
    name, index = _target(m.group(1), where)
    kind = m.group(2)
    argtext = m.group(4)
    rest = m.group(5).strip()
    if kind in ("u", "i", "ue", "ie"):
        if argtext is None:
            raise SyntaxFileError(f"{where}: {kind} needs an argument")
        arg = _compile(argtext, where)
    else:
        if argtext not in (None, "32", "v"):
            raise SyntaxFileError(f"{where}: {kind} takes no argument")
        arg = None
    elem = Elem(name, index, kind, arg, where=where)
    while rest:
        if rest.startswith("default "):
            elem.default = _compile(rest[len("default "):], where)
            break
        word, _, rest = rest.partition(" ")
        rest = rest.strip()
        tok, _, rest = rest.partition(" ")
        rest = rest.strip()
        if word == "range":
            lo, sep, hi = tok.partition("..")
            if not sep:
                raise SyntaxFileError(f"{where}: range needs LO..HI")
            elem.lo = _compile(lo, where) if lo else None
            elem.hi = _compile(hi, where) if hi else None
        elif word == "reserved":
            elem.reserved = _compile(tok, where)
        else:
            raise SyntaxFileError(f"{where}: unknown element option {word!r}")
    return elem


def _parse_block(lines, i, indent, fname):
    """Parse statements at exactly ``indent``; return (body, next line index)."""
    body = []
    while i < len(lines):
        lineno, ind, text = lines[i]
        where = f"{fname}:{lineno}"
        if ind < indent:
            break
        if ind > indent:
            raise SyntaxFileError(f"{where}: unexpected indentation")
        i += 1

        def sub(i):
            if i >= len(lines) or lines[i][1] <= indent:
                raise SyntaxFileError(f"{where}: empty block")
            return _parse_block(lines, i, lines[i][1], fname)

        if text.startswith("if ") and text.endswith(":"):
            node = If([])
            blk, i = sub(i)
            node.branches.append((_compile(text[3:-1], where), blk))
            while i < len(lines) and lines[i][1] == indent:
                t = lines[i][2]
                w2 = f"{fname}:{lines[i][0]}"
                if t.startswith("elif ") and t.endswith(":"):
                    blk, i = sub(i + 1)
                    node.branches.append((_compile(t[5:-1], w2), blk))
                elif t == "else:":
                    node.orelse, i = sub(i + 1)
                    break
                else:
                    break
            body.append(node)
        elif text.startswith("for ") and text.endswith(":"):
            m = re.match(rf"^for\s+({_IDENT})\s+in\s+(.+):$", text)
            if not m:
                raise SyntaxFileError(f"{where}: bad for statement")
            blk, i = sub(i)
            body.append(For(m.group(1), _compile(m.group(2), where), blk))
        elif text.startswith("call "):
            m = _RE_CALL.match(text)
            if not m:
                raise SyntaxFileError(f"{where}: bad call statement")
            args = [_compile(a, where) for a in _split_args(m.group(2))]
            body.append(Call(m.group(1), args, m.group(3), where))
        elif text.startswith("let ") or text.startswith("infer "):
            kw, _, rest = text.partition(" ")
            tgt, eq, expr = rest.partition("=")
            if not eq:
                raise SyntaxFileError(f"{where}: {kw} needs '='")
            name, index = _target(tgt, where)
            body.append(Let(name, index, _compile(expr, where), infer=(kw == "infer")))
        elif text.startswith("array "):
            targets = [_target(t, where) for t in _split_args(text[6:])]
            body.append(Array(targets))
        elif text.startswith("check "):
            expr, arrow, err = text[6:].partition("->")
            cls, msg = _errors.SyntaxValueError, f"check failed: {expr.strip()}"
            if arrow:
                m = _RE_ERRMSG.match(err.strip())
                if not m:
                    raise SyntaxFileError(f"{where}: check needs '-> ErrorClass \"message\"'")
                cls, msg = _error_class(m.group(1), where), m.group(2)
            body.append(Check(_compile(expr, where), cls, msg))
        elif text.startswith("error "):
            m = _RE_ERRMSG.match(text[6:].strip())
            if not m:
                raise SyntaxFileError(f"{where}: error needs 'ErrorClass \"message\"'")
            body.append(Error(_error_class(m.group(1), where), m.group(2)))
        elif text.startswith("hook "):
            body.append(Hook(text[5:].strip()))
        elif text == "byte_alignment()":
            body.append(Align())
        else:
            m = _RE_ELEM.match(text)
            if not m:
                raise SyntaxFileError(f"{where}: cannot parse {text!r}")
            body.append(_parse_elem(m, where))
    return body, i


def parse_syntax(text, fname="<syntax>", tables=None):
    """Parse one .syntax file into ``tables`` (a new SyntaxTables if None)."""
    if tables is None:
        tables = SyntaxTables({}, {}, [])
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise SyntaxFileError(f"{fname}:{n}: tabs are not allowed")
        s = _strip_comment(raw)
        if s.strip():
            lines.append((n, len(s) - len(s.lstrip(" ")), s.strip()))
    i = 0
    while i < len(lines):
        lineno, ind, text = lines[i]
        where = f"{fname}:{lineno}"
        if ind != 0:
            raise SyntaxFileError(f"{where}: statement outside a structure")
        m = _RE_CONST.match(text)
        if m:
            tables.constants[m.group(1)] = eval(_compile(m.group(2), where).code,
                                                {"__builtins__": {}}, dict(tables.constants))
            i += 1
            continue
        m = _RE_STRUCT.match(text)
        if not m:
            raise SyntaxFileError(f"{where}: expected 'name(params):' or 'const'")
        name = m.group(1)
        if name in tables.structs:
            raise SyntaxFileError(f"{where}: structure {name} defined twice")
        params = [p for p in _split_args(m.group(2) or "")]
        if i + 1 >= len(lines) or lines[i + 1][1] == 0:
            raise SyntaxFileError(f"{where}: empty structure")
        body, i = _parse_block(lines, i + 1, lines[i + 1][1], fname)
        tables.structs[name] = Struct(name, params, body, where)
    tables.files.append(fname)
    return tables


def _validate(tables):
    def walk(body, where):
        for node in body:
            if isinstance(node, Call):
                st = tables.structs.get(node.struct)
                if st is None:
                    raise SyntaxFileError(f"{node.where}: call of undefined structure {node.struct}")
                if len(st.params) != len(node.args):
                    raise SyntaxFileError(f"{node.where}: {node.struct} takes {len(st.params)} args")
            elif isinstance(node, If):
                for _, b in node.branches:
                    walk(b, where)
                walk(node.orelse, where)
            elif isinstance(node, For):
                walk(node.body, where)
    for st in tables.structs.values():
        walk(st.body, st.source)


def syntax_dir():
    """Directory holding the .syntax tables: the installed copy, else the source checkout."""
    try:
        from importlib import resources
        d = resources.files("nnr_core.syntax") / "_spec"
        if d.is_dir() and any(p.name.endswith(".syntax") for p in d.iterdir()):
            return Path(str(d))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    repo = Path(__file__).resolve().parents[2] / "spec" / "syntax"
    if repo.is_dir():
        return repo
    raise FileNotFoundError("syntax tables not found (nnr_core/syntax/_spec/ or spec/syntax/)")


def load_dir(path):
    tables = SyntaxTables({}, {}, [])
    files = sorted(p for p in os.listdir(path) if p.endswith(".syntax"))
    if not files:
        raise FileNotFoundError(f"no .syntax files in {path}")
    for name in files:
        with open(os.path.join(path, name), encoding="utf-8") as fp:
            parse_syntax(fp.read(), name, tables)
    _validate(tables)
    return tables


@functools.lru_cache(maxsize=None)
def load_tables():
    """All syntax tables, parsed once per process."""
    return load_dir(syntax_dir())
