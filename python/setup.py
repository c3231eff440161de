"""Marks the wheel as platform-specific but Python-version independent (py3-none-linux_x86_64):
it carries native binaries, called through ctypes and exec, not a CPython extension.
tools/wheel then retags it to manylinux with auditwheel."""
import platform

from setuptools import Distribution, setup

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70
    from wheel.bdist_wheel import bdist_wheel


class NativeDistribution(Distribution):
    """Installs into platlib: the package holds native binaries."""

    def has_ext_modules(self):
        return True


class NativeWheel(bdist_wheel):
    def get_tag(self):
        return "py3", "none", f"linux_{platform.machine()}"


setup(distclass=NativeDistribution, cmdclass={"bdist_wheel": NativeWheel})
