"""The benchmark's models: name -> loader(quick, log) returning a ModelSpec (spec.py)."""


def _fmnist(quick, log):
    from benchmarks.rd.models import fmnist
    return fmnist.load(quick=quick, log=log)


def _crepe(quick, log):
    from benchmarks.rd.models import crepe
    return crepe.load(quick=quick)


def _crepe_full(quick, log):            # 22 M parameters, ~20x the inference cost of tiny (README)
    from benchmarks.rd.models import crepe
    return crepe.load(quick=quick, size="full")


def _effnet(quick, log):
    from benchmarks.rd.models import effnet
    return effnet.load(quick=quick, log=log)


LOADERS = {"fmnist": _fmnist, "crepe": _crepe, "effnet": _effnet, "crepe-full": _crepe_full}
DEFAULT = ("fmnist", "crepe", "effnet")
