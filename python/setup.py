"""Builds the `fgbg` Python package: one pybind11 extension over fgbg's header-only C++ library.

Offline and against the system's packages (Debian 12: python3-torch, pybind11-dev,
libeigen3-dev):

    /usr/bin/python3 -m pip install --no-build-isolation ./python
    /usr/bin/python3 python/setup.py build_ext --inplace      # for the tests, in place

The extension does not link libtorch: Python hands it the memory of the tensors (address, shape,
strides) and it wraps them as Eigen maps. It is compiled with -O3 -march=native, i.e. for the CPU
it is built on; set FGBG_PY_NATIVE=0 for a portable build (much slower, see docs/python.md).
FGBG_INCLUDE_DIR and EIGEN_INCLUDE_DIR override where the headers are found.
"""
import os
import sys

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))


def _find_include(env, candidates, probe):
    paths = [os.environ[env]] if os.environ.get(env) else candidates
    for p in paths:
        if os.path.exists(os.path.join(p, probe)):
            return p
    sys.exit(f"fgbg setup: cannot find {probe} in {paths}; set {env}")


fgbg_include = _find_include(
    "FGBG_INCLUDE_DIR",
    [os.path.join(here, "..", "include"), os.path.join(here, "include")],
    os.path.join("fgbg", "fgbg.hpp"),
)
eigen_include = _find_include(
    "EIGEN_INCLUDE_DIR", ["/usr/include/eigen3", "/usr/local/include/eigen3"],
    os.path.join("Eigen", "Core"))
pybind_candidates = ["/usr/include", "/usr/local/include"]
try:  # a pip-installed pybind11, if there is one
    import pybind11

    pybind_candidates.insert(0, pybind11.get_include())
except ImportError:
    pass
pybind_include = _find_include("PYBIND11_INCLUDE_DIR", pybind_candidates,
                               os.path.join("pybind11", "pybind11.h"))

native = os.environ.get("FGBG_PY_NATIVE", "1") not in ("0", "off", "OFF", "no", "false")
# Eigen as a system header: its AVX-512 intrinsics warn under the interpreter's -Wall.
flags = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-DNDEBUG", "-isystem", eigen_include]
if native:
    # GCC 12's own AVX-512 intrinsic headers warn (-Wuninitialized, GCC bug 105593) under the
    # interpreter's -Wall once inlined into fgbg's kernels.
    flags += ["-march=native", "-Wno-uninitialized", "-Wno-maybe-uninitialized"]

setup(
    name="fgbg",
    version="0.1.0",
    description="fgbg's foreground-background imbalance losses for PyTorch (CPU)",
    license="MIT",
    packages=["fgbg"],
    python_requires=">=3.8",
    ext_modules=[
        Extension(
            "fgbg._fgbg",
            sources=[os.path.relpath(os.path.join(here, "src", "fgbg_ext.cpp"))],
            include_dirs=[fgbg_include, pybind_include],
            language="c++",
            extra_compile_args=flags,
        )
    ],
    zip_safe=False,
)
