#!/usr/bin/env bash
# Creates .venv and node_modules from the lock files when they are missing or stale.
# Idempotent and offline-safe once done: every other make target calls it first.
set -euo pipefail
cd "$(dirname "$0")/.."

LAMBDA_PY="3.13"  # keep equal to infra/config.py LAMBDA_PYTHON_VERSION (tests assert it, F16)
export UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_PROJECT_ENVIRONMENT=.venv

find_python() {
  local candidate
  for candidate in "python${LAMBDA_PY}" $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/${LAMBDA_PY}*/bin/python${LAMBDA_PY} 2>/dev/null | sort -V -r) /usr/bin/python${LAMBDA_PY}; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then echo "$candidate"; return 0; fi
  done
  for candidate in python3 python3.12 python3.11; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "WARNING: Python ${LAMBDA_PY} (the Lambda runtime) not found; using $($candidate -V)." \
           "Tests will not run on the interpreter that deploys (catalogue F16)." >&2
      echo "$candidate"; return 0
    fi
  done
  echo "ERROR: Python >= 3.11 is required (3.13 preferred). Install it, e.g. 'apt-get install python3'." >&2
  return 1
}

stamp=".venv/.bootstrap-lock"
want="$(cat uv.lock requirements/bootstrap.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  py="$(find_python)"
  echo "bootstrap: creating .venv with $($py -V)" >&2
  [[ -x .venv/bin/python ]] || "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/bootstrap.txt
  .venv/bin/uv sync --frozen --quiet
  echo "$want" > "$stamp"
fi

if [[ ! -d node_modules/aws-cdk || package-lock.json -nt node_modules/.package-lock.json ]]; then
  command -v npm >/dev/null || { echo "ERROR: Node >= 20 with npm is required (apt-get install nodejs npm)." >&2; exit 1; }
  echo "bootstrap: installing the pinned npm tools: CDK CLI, asl-validator (npm ci)" >&2
  npm ci --silent --no-audit --no-fund
fi

# pgbouncer: the local stand-in for RDS Proxy (devstack/pgbouncer.py). Debian's package, like
# the PostgreSQL server; installed here when missing so a fresh machine needs nothing by hand.
if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing pgbouncer (apt-get install pgbouncer)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
  else
    echo "ERROR: pgbouncer is required for the local stack (the RDS Proxy stand-in):" \
         "'sudo apt-get install pgbouncer' on Debian/Ubuntu." >&2
    exit 1
  fi
fi
