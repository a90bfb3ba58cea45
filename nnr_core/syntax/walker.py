"""The one interpreter of the syntax tables: reads, writes and traces NNR syntax structures.

Reading and writing walk the same tables (``spec/syntax``, parsed by ``lang``), so the two can
never drift apart (the FFmpeg CBS / construct idea). In both modes every syntax element produces
one trace record in the same format.

Evaluation environment of an expression, in lookup order (explicit, nothing else is visible):
1. loop variables and structure parameters of the current structure,
2. the fields of the structure being read/written (for inline calls: the caller's dict),
3. the enclosing state: general_profile_idc, the MPS fields, dc_pending_h, bits_left(),
4. the constants of the tables and the helper functions below.
"""
import copy
import math

from nnr_core.errors import (BitstreamError, ConstraintViolationError, NNRError, SyntaxValueError,
                        UnsupportedFeatureError)

from . import lang

_MISSING = object()


# -- helper functions available to expressions ------------------------------------------------
def block_rows_minus1(rows, scan_order):
    """NumBlockRowsMinus1(r) = ceil(r / BlockDim) - 1, BlockDim = 4 << scan_order (HLS §8.5)."""
    shift = 2 + scan_order
    return ((rows + (1 << shift) - 1) >> shift) - 1


def codebook_values(size, zero_offset, zero_value, delta_left, delta_right):
    """Codebook[] of HLS §8.3 from the zero value and the left/right deltas."""
    cb = [0] * size
    cb[zero_offset] = zero_value
    for j in range(zero_offset - 1, -1, -1):
        cb[j] = cb[j + 1] - delta_left[j] - 1
    for j in range(zero_offset + 1, size):
        cb[j] = cb[j - 1] + delta_right[j] + 1
    return cb


def bit_offset_deltas(n, first, diffs):
    """BitOffsetDelta[] of HLS §8.5: [0] = ep_bit_offset_delta, [j] = [j-1] + diff[j]."""
    out = []
    for j in range(n):
        out.append(first if j == 0 else out[j - 1] + diffs[j])
    return out


def prod(values):
    return math.prod(values)


_FUNCTIONS = {
    "range": range, "len": len, "min": min, "max": max, "abs": abs, "prod": prod,
    "block_rows_minus1": block_rows_minus1, "codebook_values": codebook_values,
    "bit_offset_deltas": bit_offset_deltas,
}


class _Env:
    """The mapping handed to eval(): scope, then fields, then enclosing state."""

    __slots__ = ("scope", "fields", "state")

    def __init__(self, scope, fields, state):
        self.scope, self.fields, self.state = scope, fields, state

    def __getitem__(self, key):
        if key in self.scope:
            return self.scope[key]
        v = self.fields.get(key, _MISSING)
        if v is not _MISSING:
            return v
        return self.state[key]   # KeyError -> NameError in eval


def _norm(v):
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _lookup(container, name, idx):
    v = container.get(name, _MISSING)
    for i in idx:
        if v is _MISSING or v is None:
            return _MISSING
        try:
            v = v[i]
        except (IndexError, KeyError, TypeError):
            return _MISSING
    return _MISSING if v is None else v


def _store(container, name, idx, value):
    if not idx:
        container[name] = value
        return
    lst = container.get(name)
    if not isinstance(lst, list):
        lst = [] if lst is None else list(_norm(lst))
        container[name] = lst
    for i in idx[:-1]:
        while len(lst) <= i:
            lst.append(None)
        if not isinstance(lst[i], list):
            lst[i] = [] if lst[i] is None else list(_norm(lst[i]))
        lst = lst[i]
    i = idx[-1]
    while len(lst) <= i:
        lst.append(None)
    lst[i] = value


def _desc_text(kind, arg):
    if kind == "flt":
        return "flt(32)"
    if kind == "st":
        return "st(v)"
    return f"{kind}({arg})"


class _Ctx:
    __slots__ = ("fields", "scope", "path", "coded")

    def __init__(self, fields, scope, path, coded):
        self.fields, self.scope, self.path, self.coded = fields, scope, path, coded


class Walker:
    """Walks syntax structures in mode ``"read"`` (stream = BitReader) or ``"write"`` (BitWriter).

    ``state`` is the enclosing-state mapping (general_profile_idc, MPS fields, ...); ``hooks`` maps
    hook names to callables taking the current fields dict. ``strict`` also checks reserved bits and
    byte_alignment() bits when reading. ``trace_base`` is added to trace bit positions (writing).
    """

    def __init__(self, mode, stream, state=None, hooks=None, trace=None, strict=False,
                 unit_index=None, trace_base=0, tables=None):
        if mode not in ("read", "write"):
            raise ValueError(mode)
        self.mode = mode
        self.reading = mode == "read"
        self.stream = stream
        self.tables = tables or lang.load_tables()
        self.hooks = hooks or {}
        self.trace = trace
        self.strict = strict
        self.unit_index = unit_index
        self.trace_base = trace_base
        st = dict(state or {})
        st["bits_left"] = stream.bits_left if self.reading else (lambda: 1 << 62)
        self.state = st
        self.globals = {"__builtins__": {}}
        self.globals.update(self.tables.constants)
        self.globals.update(_FUNCTIONS)

    # -- public -----------------------------------------------------------------------------
    def run(self, struct_name, fields=None, args=(), path=None):
        """Read (fields filled in and returned) or write (fields completed, copy returned)."""
        if fields is None:
            fields = {}
        elif not self.reading:
            fields = copy.deepcopy(fields)
        try:
            self._call(struct_name, list(args), fields, struct_name if path is None else path,
                       set())
        except NNRError as exc:
            raise exc.located(unit_index=self.unit_index) from None
        return fields

    # -- machinery --------------------------------------------------------------------------
    @staticmethod
    def _join(path, name):
        return f"{path}.{name}" if path else name

    def _eval(self, expr, ctx):
        try:
            return eval(expr.code, self.globals, _Env(ctx.scope, ctx.fields, self.state))
        except NameError as exc:
            raise _Undefined(str(exc).split("'")[1] if "'" in str(exc) else str(exc), expr) from None

    def _fail(self, cls, msg, ctx, element=None, **kw):
        kw.setdefault("bit_offset", self.stream.pos + (0 if self.reading else self.trace_base))
        return cls(msg, unit_index=self.unit_index, element=element or ctx.path, **kw)

    def _call(self, name, args, fields, path, coded):
        struct = self.tables.structs[name]
        ctx = _Ctx(fields, dict(zip(struct.params, args)), path, coded)
        self._body(struct.body, ctx)

    def _body(self, body, ctx):
        for node in body:
            try:
                self._node(node, ctx)
            except _Undefined as und:
                # A variable no field, parameter or state provides: missing state (e.g. no MPS)
                # when reading, incomplete fields when writing.
                raise self._fail(
                    SyntaxValueError if not self.reading else ConstraintViolationError,
                    f"{und.name} is needed by '{und.expr.text}' but is not available",
                    ctx) from None

    def _node(self, node, ctx):
        t = type(node)
        if t is lang.Elem:
            self._elem(node, ctx)
        elif t is lang.If:
            for cond, blk in node.branches:
                if self._eval(cond, ctx):
                    self._body(blk, ctx)
                    return
            self._body(node.orelse, ctx)
        elif t is lang.For:
            iterable = self._eval(node.iterable, ctx)
            if self._byte_string(node, iterable, ctx):
                return
            scope = ctx.scope
            for v in iterable:
                scope[node.var] = v
                self._body(node.body, ctx)
            scope.pop(node.var, None)
        elif t is lang.Call:
            args = [self._eval(a, ctx) for a in node.args]
            if node.as_field is None:
                self._call(node.struct, args, ctx.fields, self._join(ctx.path, node.struct),
                           ctx.coded)
            else:
                if self.reading:
                    sub = {}
                else:
                    sub = ctx.fields.get(node.as_field)
                    if not isinstance(sub, dict):
                        raise self._fail(SyntaxValueError, f"missing structure {node.as_field}",
                                         ctx, element=self._join(ctx.path, node.as_field))
                ctx.fields[node.as_field] = sub
                self._call(node.struct, args, sub, self._join(ctx.path, node.as_field), set())
        elif t is lang.Let:
            self._let(node, ctx)
        elif t is lang.Array:
            # Both modes: a loop that runs 0 times still leaves an empty list.
            for name, index in node.targets:
                idx = [self._eval(e, ctx) for e in index]
                if _lookup(ctx.fields, name, idx) is _MISSING:
                    _store(ctx.fields, name, idx, [])
        elif t is lang.Check:
            if not self._eval(node.expr, ctx):
                raise self._fail(node.error, node.message, ctx)
        elif t is lang.Error:
            raise self._fail(node.error, node.message, ctx)
        elif t is lang.Hook:
            fn = self.hooks.get(node.name)
            if fn is None:
                raise self._fail(UnsupportedFeatureError, f"no handler for hook {node.name}", ctx)
            try:
                fn(ctx.fields)
            except NNRError as exc:
                raise exc.located(unit_index=self.unit_index, element=self._join(ctx.path, node.name),
                                  bit_offset=self.stream.pos) from None
        elif t is lang.Align:
            pos = self.stream.pos
            path = self._join(ctx.path, "byte_alignment()")
            if self.reading:
                n, v = self.stream.byte_alignment(strict=self.strict, name=path)
            else:
                n, v = self.stream.byte_alignment(name=path)
            if self.trace is not None:
                self.trace.emit(pos + self.trace_base, path, f"u({n})", v)
        else:  # pragma: no cover
            raise TypeError(node)

    def _byte_string(self, node, iterable, ctx):
        """Read or write `for j in range(n): name[j] u(8)` as one byte string (in one slice, not
        element by element: a topology_data_byte[] of megabytes would take minutes and gigabytes).
        The field holds bytes when read; one trace record covers the string. False: not such a
        loop (or not byte-aligned, or not starting at 0), walk it element by element."""
        body = node.body
        if len(body) != 1 or type(body[0]) is not lang.Elem:
            return False
        elem = body[0]
        if (elem.kind != "u" or elem.arg is None or elem.arg.text != "8" or len(elem.index) != 1
                or elem.index[0].text != node.var or elem.lo is not None or elem.hi is not None
                or elem.reserved is not None):
            return False
        if type(iterable) is not range or iterable.start != 0 or iterable.step != 1:
            return False
        s = self.stream
        if not s.byte_aligned:
            return False
        n = len(iterable)
        if n == 0:
            return True
        pos = s.pos
        path = f"{self._join(ctx.path, elem.name)}[0..{n - 1}]"
        if self.reading:
            if _lookup(ctx.fields, elem.name, []) not in (_MISSING, []):
                return False
            value = s.read_bytes(n, path)
            _store(ctx.fields, elem.name, [], value)
        else:
            given = _lookup(ctx.fields, elem.name, [])
            if given is _MISSING or len(given) < n:
                raise SyntaxValueError("element missing from the fields to write", unit_index=self.unit_index,
                                       element=path, bit_offset=pos + self.trace_base)
            try:
                value = bytes(given[:n])
            except (TypeError, ValueError):
                raise SyntaxValueError("byte string holds values that are not 0..255",
                                       unit_index=self.unit_index, element=path,
                                       bit_offset=pos + self.trace_base) from None
            s.write_bytes(value, path)
        if self.trace is not None:
            self.trace.emit(pos + self.trace_base, path, "u(8)", value)
        return True

    def _elem(self, node, ctx):
        idx = [self._eval(e, ctx) for e in node.index]
        path = self._join(ctx.path, node.name) + "".join(f"[{i}]" for i in idx)
        arg = self._eval(node.arg, ctx) if node.arg is not None else None
        s = self.stream
        pos = s.pos
        kind = node.kind
        if self.reading:
            if kind == "u":
                value = s.u(arg, path) if arg <= 64 else s.bits(arg, path)
            elif kind == "i":
                value = s.i(arg, path)
            elif kind == "ue":
                value = s.ue(arg, path)
            elif kind == "ie":
                value = s.ie(arg, path)
            elif kind == "flt":
                value = s.flt(path)
            else:
                value = s.st(path)
            self._range(node, value, ctx, path, pos)
            if self.strict and node.reserved is not None:
                want = self._eval(node.reserved, ctx)
                if value != want:
                    raise SyntaxValueError("reserved bits are not zero", unit_index=self.unit_index,
                                           element=path, bit_offset=pos, value=value, allowed=want)
        else:
            value = _lookup(ctx.fields, node.name, idx)
            if value is _MISSING:
                if node.default is not None:
                    try:
                        value = self._eval(node.default, ctx)
                    except (_Undefined, IndexError, KeyError, TypeError):
                        value = _MISSING
                elif node.reserved is not None:
                    value = self._eval(node.reserved, ctx)
            if value is _MISSING:
                raise SyntaxValueError("element missing from the fields to write",
                                       unit_index=self.unit_index, element=path,
                                       bit_offset=pos + self.trace_base)
            if hasattr(value, "item") and not isinstance(value, (list, dict)):
                value = value.item()   # numpy scalar
            self._range(node, value, ctx, path, pos)
            try:
                if kind == "u":
                    s.u(value, arg, path)
                elif kind == "i":
                    s.i(value, arg, path)
                elif kind == "ue":
                    s.ue(value, arg, path)
                elif kind == "ie":
                    s.ie(value, arg, path)
                elif kind == "flt":
                    s.flt(value, path)
                else:
                    s.st(value, path)
            except BitstreamError as exc:
                raise exc.located(bit_offset=pos + self.trace_base) from None
            if kind == "flt":
                value = float(value)
        _store(ctx.fields, node.name, idx, value)
        ctx.coded.add((node.name, tuple(idx)))
        if self.trace is not None:
            self.trace.emit(pos + self.trace_base, path, _desc_text(kind, arg), value)

    def _range(self, node, value, ctx, path, pos):
        if node.lo is None and node.hi is None:
            return
        lo = self._eval(node.lo, ctx) if node.lo is not None else None
        hi = self._eval(node.hi, ctx) if node.hi is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                (lo is not None and value < lo) or (hi is not None and value > hi)):
            allowed = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
            raise SyntaxValueError("value out of range", unit_index=self.unit_index,
                                   element=path, bit_offset=pos + (0 if self.reading else self.trace_base),
                                   value=value, allowed=allowed)

    def _let(self, node, ctx):
        idx = [self._eval(e, ctx) for e in node.index]
        key = (node.name, tuple(idx))
        path = self._join(ctx.path, node.name) + "".join(f"[{i}]" for i in idx)
        if node.infer and key in ctx.coded:
            return
        value = self._eval(node.expr, ctx)
        existing = _lookup(ctx.fields, node.name, idx)
        if not self.reading and existing is not _MISSING and _norm(existing) != _norm(value):
            what = ("is absent from the bitstream here and inferred" if node.infer
                    else "is derived and must be")
            raise SyntaxValueError(f"{node.name} {what} {value!r}; cannot write {existing!r}",
                                   unit_index=self.unit_index, element=path,
                                   bit_offset=self.stream.pos + self.trace_base)
        if self.reading and node.infer and existing is not _MISSING:
            return
        _store(ctx.fields, node.name, idx, value)


class _Undefined(Exception):
    def __init__(self, name, expr):
        super().__init__(name)
        self.name = name
        self.expr = expr


__all__ = ["Walker", "block_rows_minus1", "codebook_values", "bit_offset_deltas"]
