# Shared by tools/quickstart and tools/test: installs missing Debian packages and
# configures a meson build directory. Sourced, not run.

# The Debian packages ringxfer builds, tests and benchmarks with.
RX_PACKAGES=(
  g++ meson ninja-build pkg-config
  liburing-dev libabsl-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev
  pybind11-dev python3-dev
  clang libclang-rt-14-dev clang-tidy
  python3-numpy python3-pytest python3-torch python3-mesonpy python3-venv python3-pip patchelf
  libamdhip64-dev
  iperf3 iproute2 nftables
)

rx_log() { printf '%s\n' "== $*" >&2; }

# Installs whichever of the named packages are missing; quiet and offline when none
# is. `apt-get update` runs only when something must be installed.
rx_ensure_packages() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii'; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      local SUDO=sudo
    else
      echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
      return 1
    fi
  fi
  rx_log "installing ${missing[*]}"
  ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# rx_configure DIR [meson options...]: sets up DIR, or reconfigures it with the same
# options when it exists. CXX/CC from the environment pick the compiler on first setup.
rx_configure() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null || { meson setup "$dir" "$@"; return 1; }
  fi
}
