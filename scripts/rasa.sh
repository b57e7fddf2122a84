#!/usr/bin/env bash
# The "rasa engine": a real Rasa 3.6 NLU server trained from the same nlu/data/*.yml files.
#
#   scripts/rasa.sh setup          create the Rasa venv once (Python 3.10; Rasa 3.6 needs it)
#   scripts/rasa.sh train          train the NLU model for the current data, unless already trained
#   scripts/rasa.sh serve [PORT]   run the HTTP API on 127.0.0.1:PORT (default 5005), foreground
#   scripts/rasa.sh path           print where the model for the current data is (or will be)
#
# Everything (venv, models, Rasa's cache, logs) lives under $SAFEGUARD_RASA_HOME, by default
# ~/.cache/safeguard-rasa, outside the repository, so CI and developers reuse it between runs.
# Models are named after a hash of the training data and config, so `train` is a no-op until
# either changes and `serve` can never run a model that is older than the data.
#
# Quiet by default; SAFEGUARD_RASA_VERBOSE=1 shows Rasa's and pip's own output.
# SAFEGUARD_RASA_PYTHON names the Python 3.10 to build the venv with (default: pyenv's 3.10);
# SAFEGUARD_RASA_DATA trains from another folder than nlu/data (for trying out data changes).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RASA_VERSION=3.6.21
RASA_HOME=${SAFEGUARD_RASA_HOME:-$HOME/.cache/safeguard-rasa}
VENV=$RASA_HOME/venv
MODELS=$RASA_HOME/models
LOGS=$RASA_HOME/logs
DATA=${SAFEGUARD_RASA_DATA:-$ROOT/nlu/data}
CONFIG=$ROOT/config/rasa/config.yml
CONSTRAINTS=$ROOT/config/rasa/constraints.txt
VERBOSE=${SAFEGUARD_RASA_VERBOSE:-0}

# Rasa must work offline and must not phone home: no telemetry, no writes into the repository
# (its training cache defaults to ./.rasa), and quiet TensorFlow.
export RASA_TELEMETRY_ENABLED=false
export RASA_CACHE_DIRECTORY=$RASA_HOME/cache
export TF_CPP_MIN_LOG_LEVEL=2
export SQLALCHEMY_SILENCE_UBER_WARNING=1
export MPLCONFIGDIR=$RASA_HOME/matplotlib
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONNOUSERSITE=1
unset PYTHONPATH VIRTUAL_ENV
if [[ $VERBOSE != 1 ]]; then
    export PYTHONWARNINGS=ignore
fi

die() {
    echo "rasa.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Rasa and TensorFlow write into $HOME (~/.config/rasa/global.yml, ~/.keras): give them a home of
# their own under RASA_HOME, with telemetry recorded as off there too, so a later run of rasa
# without RASA_TELEMETRY_ENABLED does not start sending. pip keeps the real HOME (its config).
rasa() {
    local home=$RASA_HOME/home
    if [[ ! -f $home/.config/rasa/global.yml ]]; then
        mkdir -p "$home/.config/rasa"
        printf 'metrics:\n  enabled: false\n' >"$home/.config/rasa/global.yml"
    fi
    HOME=$home "$VENV/bin/rasa" "$@"
}

# Run a long step with its output in a log file; on failure show the end of the log.
logged() {
    local name=$1
    shift
    mkdir -p "$LOGS"
    if [[ $VERBOSE == 1 ]]; then
        "$@"
        return
    fi
    if ! "$@" >"$LOGS/$name.log" 2>&1; then
        echo "rasa.sh: $name failed; last lines of $LOGS/$name.log:" >&2
        tail -n 25 "$LOGS/$name.log" >&2
        return 1
    fi
}

# One setup or train at a time per RASA_HOME (CI and a test fixture may race).
lock() {
    mkdir -p "$RASA_HOME"
    exec 9>"$RASA_HOME/.lock"
    flock 9
}

find_python() {
    if [[ -n ${SAFEGUARD_RASA_PYTHON:-} ]]; then
        echo "$SAFEGUARD_RASA_PYTHON"
        return
    fi
    local root candidate
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for candidate in "$root"/versions/3.10.*/bin/python "$(command -v python3.10 || true)"; do
        if [[ -x $candidate ]]; then
            echo "$candidate"
            return
        fi
    done
    die "no Python 3.10 found (Rasa $RASA_VERSION needs it): install it with pyenv or set SAFEGUARD_RASA_PYTHON"
}

rasa_works() {
    [[ -x $VENV/bin/rasa ]] || return 1
    local version
    version=$(rasa --version 2>/dev/null) || return 1
    [[ $version == *"Rasa Version"*" $RASA_VERSION"* ]]
}

# What the venv was installed from: a change of version or constraints means install again.
install_stamp() {
    {
        echo "rasa==$RASA_VERSION"
        cat "$CONSTRAINTS"
    } | sha256sum | cut -c1-16
}

cmd_setup() {
    [[ -f $CONSTRAINTS ]] || die "missing $CONSTRAINTS"
    lock
    if [[ -f $VENV/.safeguard-stamp && $(<"$VENV/.safeguard-stamp") == "$(install_stamp)" ]] &&
        rasa_works; then
        return
    fi
    local python
    python=$(find_python)
    "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' ||
        die "$python is not Python 3.10"
    # A venv whose interpreter has gone (pyenv upgraded) cannot be repaired in place.
    if [[ -d $VENV ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
    fi
    [[ -d $VENV ]] || "$python" -m venv "$VENV"
    echo "rasa.sh: installing rasa==$RASA_VERSION into $VENV (a few minutes, once)" >&2
    logged setup "$VENV/bin/python" -m pip install --no-input "rasa==$RASA_VERSION" \
        -c "$CONSTRAINTS" || die "pip could not install rasa==$RASA_VERSION"
    rasa_works || die "rasa installed but '$VENV/bin/rasa --version' fails; see $LOGS/setup.log"
    install_stamp >"$VENV/.safeguard-stamp"
}

model_path() {
    [[ -f $CONFIG ]] || die "missing $CONFIG"
    compgen -G "$DATA/*.yml" >/dev/null || die "no training data: no *.yml files in $DATA"
    local files file hash
    mapfile -t files < <(printf '%s\n' "$DATA"/*.yml | LC_ALL=C sort)
    hash=$(
        {
            echo "rasa==$RASA_VERSION"
            for file in "${files[@]}" "$CONFIG"; do
                echo "== ${file#"$ROOT"/}"
                cat "$file"
            done
        } | sha256sum | cut -c1-16
    )
    echo "$MODELS/nlu-$hash.tar.gz"
}

cmd_train() {
    local model
    model=$(model_path)
    if [[ ! -f $model ]]; then
        rasa_works || die "Rasa is not installed: run 'scripts/rasa.sh setup' first"
        lock
        if [[ ! -f $model ]]; then
            # Train into a scratch dir and move the model in at the end, so an interrupted
            # run never leaves a half-written model under the final name.
            local scratch work
            rm -rf "$RASA_HOME"/train.* # left by a killed run: we hold the lock, none is live
            scratch=$(mktemp -d "$RASA_HOME/train.XXXXXX")
            work=$RASA_HOME/work
            mkdir -p "$MODELS" "$work"
            local name
            name=$(basename "$model" .tar.gz)
            if ! (cd "$work" && logged train rasa train nlu --quiet \
                --nlu "$DATA" --config "$CONFIG" --out "$scratch" --fixed-model-name "$name"); then
                rm -rf "$scratch"
                die "training failed"
            fi
            mv "$scratch/$name.tar.gz" "$model"
            rm -rf "$scratch"
            # Keep the five newest models; older data is not coming back often. (Our own file
            # names, no newlines in them, so ls is safe here.)
            local old
            # shellcheck disable=SC2012
            mapfile -t old < <(ls -1t "$MODELS"/nlu-*.tar.gz | tail -n +6)
            [[ ${#old[@]} -eq 0 ]] || rm -f "${old[@]}"
        fi
    fi
    echo "$model"
}

cmd_serve() {
    local port=${1:-5005} model
    [[ $port =~ ^[0-9]+$ ]] || die "port must be a number, not '$port'"
    rasa_works || die "Rasa is not installed: run 'scripts/rasa.sh setup' first"
    model=$(model_path)
    [[ -f $model ]] || die "no model for the current nlu/data: run 'scripts/rasa.sh train' first"
    mkdir -p "$RASA_HOME/work"
    # An empty working dir: `rasa run` reads endpoints.yml/credentials.yml from it if present.
    cd "$RASA_HOME/work"
    local quiet=(--quiet)
    [[ $VERBOSE == 1 ]] && quiet=()
    export HOME=$RASA_HOME/home
    exec "$VENV/bin/rasa" run --enable-api --model "$model" --port "$port" \
        --interface 127.0.0.1 "${quiet[@]}"
}

case ${1:-} in
setup) cmd_setup ;;
train) cmd_train ;;
serve)
    shift
    [[ $# -le 1 ]] || usage
    cmd_serve "$@"
    ;;
path) model_path ;;
*) usage ;;
esac
