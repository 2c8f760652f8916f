# Runs on a node with `sh -c` (POSIX sh, no Python start: ~0.15 s less per run), once per
# `sfcluster run`: a fresh private run dir in the cluster's state dir, then the run's files from a
# tar on stdin. $1: cluster name, $2: run id (both checked on the controller and here).
# The same rules as nodestate.py: ~/.sfcluster/<cluster>/runs must each be a directory, not a link,
# ours, mode 700 (created so when missing); the run dir is created fresh (mkdir fails if it exists).
# Prints "RUN_DIR <absolute path>" (each node's user has its own home), or "ERROR <why>" + exit 3.
set -u
umask 077
case "$1" in *[!a-z0-9_]*|"") echo "ERROR bad cluster name"; exit 3;; esac
case "$2" in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
  *) echo "ERROR bad run id $2"; exit 3;; esac
home=${SFCLUSTER_NODE_HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}  # the variable: for the unit tests
[ -n "$home" ] || home=$HOME
for d in "$home/.sfcluster" "$home/.sfcluster/$1" "$home/.sfcluster/$1/runs"; do
  [ -e "$d" ] || [ -L "$d" ] || mkdir -m 700 "$d" 2>/dev/null || true
  if [ -L "$d" ] || [ ! -d "$d" ]; then echo "ERROR $d is not a directory (a link or a file is there); remove it"; exit 3; fi
  if [ ! -O "$d" ]; then echo "ERROR $d belongs to another user; remove it"; exit 3; fi
  mode=$(stat -c %a "$d")
  if [ "$mode" != 700 ]; then echo "ERROR $d has mode $mode: others can get in; chmod 700 it after checking its contents"; exit 3; fi
done
rd="$home/.sfcluster/$1/runs/$2"
mkdir -m 700 "$rd" 2>/dev/null || { echo "ERROR $rd exists already or cannot be made"; exit 3; }
tar -x --no-same-owner --no-same-permissions -C "$rd" -f - || { echo "ERROR unpacking into $rd failed"; exit 3; }
echo "RUN_DIR $rd"
