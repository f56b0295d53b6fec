"""setup.py - builds libdeepseek (make lib in the repository above this
folder) and ships the shared library inside the package, so that
`pip install ./python` works from a checkout. Outside a checkout (or when the
build fails) the package is installed without it and finds libdeepseek at
run time: $DEEPSEEK_LIB, then the system's (ldconfig, LD_LIBRARY_PATH)."""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class BuildWithLib(build_py):
    def run(self):
        super().run()
        if os.environ.get("DEEPSEEK_SKIP_BUILD") or not os.path.exists(os.path.join(REPO, "include", "deepseek.h")):
            return
        try:
            subprocess.run(["make", "-C", REPO, "-j2", "lib"], check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print("deepseek_c: could not build libdeepseek (%s); it will be looked up at run time" % e)
            return
        src = os.path.join(REPO, "build", "libdeepseek.so.0")
        dst = os.path.join(self.build_lib, "deepseek_c", "libdeepseek.so.0")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.realpath(src), dst)


setup(cmdclass={"build_py": BuildWithLib})
