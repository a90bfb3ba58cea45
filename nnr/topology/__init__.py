"""Topology carriage (HLS §6): ONNX graphs (NNR_TPL_ONNX) and PyTorch module skeletons
(NNR_TPL_PYT) in the NNR_TPL unit, their tensors in NDUs. onnx and torch are optional and are
imported on first use."""


def __getattr__(name):
    if name in ("encode_onnx", "decode_onnx", "split_model", "rebuild"):
        from nnr.topology import onnx_tpl
        return getattr(onnx_tpl, name)
    if name in ("encode_module", "decode_module"):
        from nnr.topology import torch_tpl
        return getattr(torch_tpl, name)
    raise AttributeError(f"module 'nnr.topology' has no attribute {name!r}")


__all__ = ["encode_onnx", "decode_onnx", "split_model", "rebuild", "encode_module", "decode_module"]
