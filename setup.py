"""Only here to ship weft-eventlet-compat.pth at the top of site-packages (pyproject.toml has the rest).

A .pth file is the one place Python runs code at start-up for every program in the environment,
which is what plain `ryu-manager controller.app` needs (see weft_compat/__init__.py).
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "weft-eventlet-compat.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        shutil.copy(os.path.join("weft_compat", PTH), os.path.join(self.build_lib, PTH))


setup(cmdclass={"build_py": BuildPyWithPth})
