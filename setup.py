"""Build script: compiles every Cython module under nnr_core/."""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py as _build_py


class build_py(_build_py):
    """Also copy the syntax tables spec/syntax/*.syntax into nnr_core/syntax/_spec/."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        target = os.path.join(self.build_lib, "nnr_core", "syntax", "_spec")
        self.mkpath(target)
        for path in sorted(glob.glob(os.path.join("spec", "syntax", "*.syntax"))):
            self.copy_file(path, os.path.join(target, os.path.basename(path)))


# The C of the codec core lives in headers (nnr_core/*/include/*.h); every module compiles with
# warnings on (Cython's generated code and the headers build without any).
INCLUDE_DIRS = [os.path.join("nnr_core", "cabac", "include"), os.path.join("nnr_core", "quant", "include")]
WARNINGS = ["-Wall", "-Wextra"]


# C sources compiled into a module beside its Cython.
C_SOURCES = {os.path.join("nnr_core", "cabac", "_enc_pseudo.pyx"):
             [os.path.join("nnr_core", "cabac", "include", "nnr_shadow.c")]}


def _compile_args(path):
    args = ["-O3"] + WARNINGS
    if os.path.basename(path) == "_dec_levels.pyx":
        # The level loop's speed moves by a few % with its offset to 64-byte fetch blocks; pin it.
        args.append("-falign-functions=64")
    return args


extensions = [
    Extension(
        os.path.splitext(path)[0].replace(os.sep, "."),
        [path] + C_SOURCES.get(path, []),
        include_dirs=[numpy.get_include()] + INCLUDE_DIRS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=_compile_args(path),
    )
    for path in sorted(glob.glob(os.path.join("nnr_core", "**", "*.pyx"), recursive=True))
]

setup(
    cmdclass={"build_py": build_py},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
