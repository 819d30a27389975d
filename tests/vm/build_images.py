"""Builds the VM images once and writes where they are as JSON, for test
processes that run at the same time (scripts/test.sh runs the VM modules
that boot one VM at a time in two processes at once); each of them reads
the file named by CAIRN_VM_IMAGES instead of building.

Usage: CAIRN_BIN=target/debug/cairn python tests/vm/build_images.py OUT.json"""

import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cairn_vm_conftest", os.path.join(HERE, "conftest.py"))
vm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vm)

if len(sys.argv) != 2:
    sys.exit(__doc__)
images = vm.build_images()
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(images, f)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
for what, where in sorted(images.items()):
    print(f"{what}: {where}")
