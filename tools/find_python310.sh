#!/bin/sh
# Print the path of a working CPython 3.10 interpreter, or explain and fail.
# lava-nc 0.10.0 supports only Python 3.10. Order: PATH, pyenv's versions folder, common prefixes.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
for c in python3.10 python3 python; do
    p=$(command -v "$c" 2>/dev/null) || continue
    if ok "$p"; then echo "$p"; exit 0; fi
done
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for p in "$root"/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10 /opt/python*/bin/python3.10; do
    if [ -x "$p" ] && ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: no Python 3.10 interpreter found (lava-nc 0.10.0 needs >=3.10,<3.11)." >&2
echo "       Install one (e.g. 'pyenv install 3.10.13') or put python3.10 on PATH, then re-run make." >&2
exit 1
