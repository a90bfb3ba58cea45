"""PyTorch modules in NNC: the module skeleton as NNR_TPL_PYT topology (topology_storage_format 3,
HLS §6), its parameters and buffers as NDUs.

The skeleton is the `torch.save`d module with every carried tensor replaced by a tensor of the same
shape and dtype on the `meta` device (no data), deflated (NNR_DFL; NNCodec writes format 3 only
uncompressed with an empty string, so its streams are unaffected). Tied tensors are carried once and
tied again on decoding. Carried: float16/32/64 (bfloat16 as float32) tensors, quantized with the
usual options or NNR_PT_RAW_FLOAT with `lossless=True`, and integer tensors whose values fit int32
(NNR_PT_INT); others (bool, large int64, num_batches_tracked, which the reference's PyTorch path
does not code) stay in the skeleton with their data.

Security: a skeleton is a pickle, and unpickling can run arbitrary code. `decode_module` loads it
with torch's `weights_only` unpickler, which accepts only the classes listed in `safe_globals`
(your module classes, e.g. `[torch.nn.Sequential, torch.nn.Linear, MyNet]`); `allow_pickle=True`
loads any pickle, and is only for bitstreams from a source you trust.

torch is optional and imported on first use."""
import copy
import io

import numpy as np

from nnr.errors import ConstraintViolationError, EncoderConfigError, SyntaxValueError, UnsupportedFeatureError
from nnr.optional import import_optional
from nnr.topology.carriage import read_tpl, tpl_fields
from nnr_core.syntax.constants import NNR_TPL_PYT

INSTALL_HINT = "PyTorch module support needs torch: pip install torch==2.13.0 (the CPU build is enough)"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _torch():
    return import_optional("torch", INSTALL_HINT)


def _named_tensors(module):
    """[(name, tensor, is_parameter)] of every parameter and buffer, tied ones under each name."""
    out = [(n, p, True) for n, p in module.named_parameters(remove_duplicate=False)]
    out += [(n, b, False) for n, b in module.named_buffers(remove_duplicate=False)]
    return out


def _carried(torch, name, t, lossless):
    """The numpy array the encoder should code for tensor `t`, or None if it stays in the skeleton."""
    if ".num_batches_tracked" in name or name.startswith("num_batches_tracked") or t.numel() == 0:
        return None
    if t.layout != torch.strided or t.is_meta or t.is_complex() or t.is_quantized:
        return None
    t = t.detach().cpu()
    if t.is_floating_point():
        if t.dtype == torch.float64 and lossless:
            return None
        a = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy().astype(np.float32, copy=False)
        return a if np.all(np.isfinite(a)) else None
    if t.dtype == torch.bool or t.dtype.is_signed is None:
        return None
    a = t.numpy()
    if a.dtype.kind not in "iu" or int(a.min()) < INT32_MIN or int(a.max()) > INT32_MAX:
        return None
    return a.astype(np.int32, copy=False)


def encode_module(module, *, lossless=False, compress=True, bnf=False, **options) -> bytes:
    """Encode an nn.Module (architecture and weights) into one NNC bitstream: NNR_TPL_PYT skeleton +
    NDUs named by the state_dict names. Options are the Encoder's (framework defaults to "pytorch",
    the reference's PyTorch rules); `lossless=True` carries float tensors as NNR_PT_RAW_FLOAT;
    `bnf=True` folds each batch norm into its layer's LS and bias (blocks as the reference guesses
    them, nnr.bnf; with the module's own batch-norm eps, where the reference takes 1e-5), and
    decode_module unfolds them."""
    torch = _torch()
    import nnr
    if not isinstance(module, torch.nn.Module):
        raise EncoderConfigError(f"encode_module needs a torch.nn.Module, not {type(module).__name__}")
    tensors, raw, memo = {}, [], {}
    for name, t, is_param in _named_tensors(module):
        if id(t) in memo:
            continue                    # a tied tensor: carried under its first name
        a = _carried(torch, name, t, lossless)
        if a is None:
            continue
        tensors[name] = a.reshape(-1) if a.ndim == 0 else a
        if lossless and a.dtype.kind == "f":
            raw.append(name)
        meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
        memo[id(t)] = torch.nn.Parameter(meta, requires_grad=t.requires_grad) if is_param else meta
    if not tensors:
        packed = any("_packed_params" in k for k in module.state_dict())
        raise EncoderConfigError("the module has no parameter or buffer that NNC can carry" + (
            " (a quantized module keeps its weights in packed parameters: save its state_dict() and code the "
            "file with nnr_encode, which carries them exactly)" if packed else ""))
    # deepcopy consults the memo first: the carried tensors are replaced, never copied.
    skeleton = copy.deepcopy(module, memo)
    buf = io.BytesIO()
    try:
        torch.save(skeleton, buf)
    except Exception as exc:           # pickling a local class, a lambda, an open file, ...
        raise EncoderConfigError(f"the module cannot be saved with torch.save: {type(exc).__name__}: {exc}") from None
    options.setdefault("framework", "pytorch")
    if bnf:
        from nnr.bnf import bn_eps_of_module, module_option
        if "block_id_and_param_type" not in options:
            options["block_id_and_param_type"] = module_option(module, tensors)
        options["bnf"] = True
        options.setdefault("bnf_eps", bn_eps_of_module(module))     # the module's own, so folding is exact
    if raw:
        options["raw_float"] = tuple(options.get("raw_float", ())) + tuple(raw)
    return nnr.Encoder(**options).encode(
        tensors, incremental=False, topology=tpl_fields(NNR_TPL_PYT, buf.getvalue(), compress))


def decode_module(data, *, allow_pickle=False, safe_globals=(), map_location="cpu", **decoder_options):
    """Decode a bitstream written by `encode_module` into the nn.Module with its decoded tensors.

    The skeleton is unpickled with torch's weights_only rules, allowing the classes in
    `safe_globals`; `allow_pickle=True` lifts the rules (arbitrary code: trusted bitstreams only)."""
    torch = _torch()
    import nnr
    dec = nnr.Decoder(**decoder_options)
    tensors = dec.decode(data)
    fmt, blob, index = read_tpl(dec.units)
    if fmt != NNR_TPL_PYT or not blob:
        raise ConstraintViolationError(f"the bitstream carries no PyTorch module skeleton (topology_storage_format "
                                       f"{fmt}, {len(blob)} bytes of topology_data)", unit_index=index,
                                       element="topology_storage_format", value=fmt)
    module = _load_skeleton(torch, blob, index, allow_pickle, safe_globals, map_location)
    _fill(torch, module, _unfolded(module, tensors))
    return module


def _unfolded(module, tensors):
    """The decoded tensors with folded batch norms (a stream of encode_module(bnf=True): the module's
    batch-norm tensors absent, its layers' LS vectors present) unfolded as nnr.bnf.unfold_bn does."""
    from nnr.bnf import bn_eps_of_module, bn_names_of_module, module_option, unfold_bn
    bn = bn_names_of_module(module)
    if not bn or any(n in tensors for n in bn) or not any(n.endswith("_scaling") for n in tensors):
        return tensors
    return unfold_bn(tensors, module_option(module), bn_eps_of_module(module))


def _load_skeleton(torch, blob, index, allow_pickle, safe_globals, map_location):
    import pickle
    element = "nnr_topology_unit_payload.topology_data_byte"
    try:
        if allow_pickle:
            module = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(list(safe_globals)):
                module = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if allow_pickle:
            raise SyntaxValueError(f"topology_data is not a torch.save'd module: {exc}", unit_index=index,
                                   element=element) from None
        lines = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()]
        first = lines[0][:200] if lines else type(exc).__name__
        raise UnsupportedFeatureError(
            f"unit {index}: the PyTorch module skeleton needs classes that torch's weights_only unpickler "
            f"does not allow ({first}); list your module classes in safe_globals=[...], or pass "
            "allow_pickle=True if you trust the bitstream (unpickling can run arbitrary code)") from None
    except Exception as exc:            # torch.load of damaged data raises many types
        raise SyntaxValueError(f"topology_data is not a torch.save'd module: {type(exc).__name__}: {exc}",
                               unit_index=index, element=element) from None
    if not isinstance(module, torch.nn.Module):
        raise SyntaxValueError(f"topology_data holds a {type(module).__name__}, not an nn.Module",
                               unit_index=index, element=element)
    return module


def _fill(torch, module, tensors):
    """Put the decoded tensors in place of the skeleton's meta tensors (tied ones share one)."""
    decoded = {}                        # id(meta tensor) -> real tensor
    for name, t, is_param in _named_tensors(module):
        if not t.is_meta:
            continue
        if id(t) not in decoded:
            if name not in tensors:
                raise ConstraintViolationError(f"the module skeleton needs tensor {name!r}, which no NDU carries",
                                               element="topology_elem_id", value=name)
            a = np.asarray(tensors[name])
            if a.size != t.numel():
                raise ConstraintViolationError(f"tensor {name!r}: {a.size} decoded elements for shape "
                                               f"{list(t.shape)}", element="topology_elem_id", value=name)
            real = torch.from_numpy(np.ascontiguousarray(a)).reshape(t.shape).to(t.dtype)
            decoded[id(t)] = torch.nn.Parameter(real, requires_grad=t.requires_grad) if is_param else real
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner) if owner else module
        if is_param:
            sub._parameters[leaf] = decoded[id(t)]
        else:
            sub._buffers[leaf] = decoded[id(t)]
