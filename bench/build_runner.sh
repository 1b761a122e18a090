#!/usr/bin/env bash
# Build hwnas's executor_runner for this machine (x86) against the installed executorch wheel; print its path.
#
#   bench/build_runner.sh            # -> .../executor_runner (built once, then reused)
#   HWNAS_RUNNER_LOGGING=OFF bench/build_runner.sh   # a Release build without logging (no iteration lines)
#
# Needs: the mobile extra (pip install -e '.[mobile]': executorch and cmake >= 3.28) and a C++17 compiler.
# The build is cached under $HWNAS_CACHE (default ~/.cache/hwnas)/runner/<executorch version>-<hash>-<logging>/,
# so a second call prints the same path at once. The hash covers the runner's sources and where the wheel lies:
# the binary loads the wheel's libraries from there, so one built for another environment is not reused. Everything but the path goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
logging="${HWNAS_RUNNER_LOGGING:-ON}"

prefix=$("$python" -c 'import executorch; print(list(executorch.__path__)[0])' 2>/dev/null) || {
    echo "error: the executorch package is not importable by $python: pip install -e '.[mobile]'" >&2
    exit 2
}
version=$("$python" -c 'from executorch.version import __version__; print(__version__)')
cmake_bin=$(dirname "$("$python" -c 'import sys; print(sys.executable)')")/cmake
[ -x "$cmake_bin" ] || cmake_bin=$(command -v cmake || true)
if [ -z "$cmake_bin" ]; then
    echo "error: no cmake (>= 3.28 needed): pip install -e '.[mobile]' brings it" >&2
    exit 2
fi
compiler="${CXX:-$(command -v c++ || command -v g++ || command -v clang++ || true)}"
if [ -z "$compiler" ]; then
    echo "error: no C++ compiler (c++, g++ or clang++): apt-get install g++" >&2
    exit 2
fi
source_hash=$({ cat "$here/runner/executor_runner.cpp" "$here/runner/CMakeLists.txt"; echo "$prefix"; } | sha256sum | cut -c1-12)
build="${HWNAS_CACHE:-$HOME/.cache/hwnas}/runner/${version}-${source_hash}-log${logging}"
binary="$build/executor_runner"
if [ ! -x "$binary" ]; then
    echo "building executor_runner (executorch $version, logging $logging) in $build" >&2
    "$cmake_bin" -S "$here/runner" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$compiler" \
        -DCMAKE_PREFIX_PATH="$prefix" -DHWNAS_RUNNER_LOGGING="$logging" >&2
    "$cmake_bin" --build "$build" -j 2 >&2
fi
echo "$binary"
