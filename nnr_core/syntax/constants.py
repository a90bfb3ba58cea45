"""The standard's named values, read from the syntax tables' ``const`` lines (spec/syntax/*.syntax):
NNR unit types (HLS §2.4), topology storage and compression formats (HLS §6), NDU payload types
and compressed parameter types (HLS §8.1). They are written once, in the tables; code takes them
from here."""
from nnr_core.syntax.lang import load_tables

_TABLES = load_tables().constants

UNIT_TYPES = ("NNR_STR", "NNR_MPS", "NNR_LPS", "NNR_TPL", "NNR_QNT", "NNR_NDU", "NNR_AGG")
TOPOLOGY_FORMATS = ("NNR_TPL_UNREC", "NNR_TPL_NNEF", "NNR_TPL_ONNX", "NNR_TPL_PYT", "NNR_TPL_TEF",
                    "NNR_TPL_PRUN", "NNR_TPL_REFLIST")
COMPRESSION_FORMATS = ("NNR_RAW", "NNR_DFL")
PAYLOAD_TYPES = ("NNR_PT_INT", "NNR_PT_FLOAT", "NNR_PT_RAW_FLOAT", "NNR_PT_BLOCK")
PARAMETER_TYPES = ("NNR_CPT_DC", "NNR_CPT_LS", "NNR_CPT_BN", "NNR_CPT_BI")

NNR_STR, NNR_MPS, NNR_LPS, NNR_TPL, NNR_QNT, NNR_NDU, NNR_AGG = (_TABLES[n] for n in UNIT_TYPES)
(NNR_TPL_UNREC, NNR_TPL_NNEF, NNR_TPL_ONNX, NNR_TPL_PYT, NNR_TPL_TEF, NNR_TPL_PRUN,
 NNR_TPL_REFLIST) = (_TABLES[n] for n in TOPOLOGY_FORMATS)
NNR_RAW, NNR_DFL = (_TABLES[n] for n in COMPRESSION_FORMATS)
NNR_PT_INT, NNR_PT_FLOAT, NNR_PT_RAW_FLOAT, NNR_PT_BLOCK = (_TABLES[n] for n in PAYLOAD_TYPES)
NNR_CPT_DC, NNR_CPT_LS, NNR_CPT_BN, NNR_CPT_BI = (_TABLES[n] for n in PARAMETER_TYPES)

UNIT_TYPE_NAMES = {_TABLES[n]: n for n in UNIT_TYPES}
PAYLOAD_TYPE_NAMES = {_TABLES[n]: n for n in PAYLOAD_TYPES}

