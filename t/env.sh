# Sourced by t/demo.sh and t/test.sh from the repository root: installs whatever is missing
# (t/setup.sh) and exports the paths it recorded (uWSGI binaries, tools venv, promtool).
bash t/setup.sh
MP_ENV=${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}
# shellcheck disable=SC1091
. "$MP_ENV/env"
