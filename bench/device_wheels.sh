#!/usr/bin/env bash
# Fill .whl/ (git-ignored) for the lent GPU machine, once per checkout, before any `run`.
#
# Why: the machine has torch, transformers, peft and accelerate but no internet. ../shared/device/wheels
# brings unsloth, trl, datasets and bitsandbytes; nobody has yet seen whether arzan's own needs
# (pydantic, rich, typer; pytest for the gpu tests) are there too, and finding out costs device minutes. So .whl/extra/ holds
# them at the versions this checkout's .venv tested, for Python 3.12 on x86-64, plus nvidia-ml-py
# (measured energy instead of TDP x time). The device commands in bench/README.md install them only
# when `import pydantic, rich, typer` fails there, so a machine that has them keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/device/wheels
[ -d "$shared" ] || { echo "error: $shared not found (the device wheel set)" >&2; exit 2; }
[ -x .venv/bin/pip ] || { echo "error: .venv missing; run make setup first" >&2; exit 2; }
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl/extra
cp "$shared"/*.whl .whl/
pins=$(.venv/bin/pip list --format=freeze 2>/dev/null | grep -iE '^(pytest|pluggy|iniconfig|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|rich|markdown[-_]it[-_]py|mdurl|pygments|typer|click|shellingham|annotated[-_]doc)==')
# shellcheck disable=SC2086
.venv/bin/pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
  --abi cp312 --platform manylinux2014_x86_64 -d .whl/extra $pins "nvidia-ml-py>=12" 2>&1 \
  | grep -v '^WARNING: Location' || true
echo ".whl: $(ls .whl/*.whl | wc -l) wheels from $shared, $(ls .whl/extra/*.whl | wc -l) in .whl/extra; $(du -sh .whl | cut -f1) to carry (limit 64 MiB)"
