# Runs on a node with `sh -c` (POSIX sh, no Python start: ~0.15 s less per copy): the ONE way files
# reach a node (remote/transfer.py). A tar on stdin is unpacked into a private directory of the
# cluster's state dir. $1: cluster name, $2: the directory, relative to the state dir, $3: "fresh"
# (the directory must not exist: a run dir is never reused) or "replace" (the directory is made
# anew: what was there goes). All checked on the controller and here.
# The same rules as nodestate.py: ~/.sfcluster, ~/.sfcluster/<cluster> and every directory on the
# way must each be a directory, not a link, ours, mode 700 (created so when missing).
# Prints "DIR <absolute path>" (each node's user has its own home), or "ERROR <why>" + exit 3.
set -u
umask 077
case "$1" in *[!a-z0-9_]*|"") echo "ERROR bad cluster name"; exit 3;; esac
case "$2" in
  runs/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
  tls) ;;
  *) echo "ERROR bad destination $2"; exit 3;; esac
case "$3" in fresh|replace) ;; *) echo "ERROR bad mode $3"; exit 3;; esac
home=${SFCLUSTER_NODE_HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}  # the variable: for the unit tests
[ -n "$home" ] || home=$HOME
home=${home%/}  # a passwd entry "/home/x/": the dir answered is a normal path (the controller checks it)
st="$home/.sfcluster/$1"
parent=$(dirname "$st/$2")
for d in "$home/.sfcluster" "$st" "$st/runs" "$parent"; do
  [ -e "$d" ] || [ -L "$d" ] || mkdir -m 700 "$d" 2>/dev/null || true
  if [ -L "$d" ] || [ ! -d "$d" ]; then echo "ERROR $d is not a directory (a link or a file is there); remove it"; exit 3; fi
  if [ ! -O "$d" ]; then echo "ERROR $d belongs to another user; remove it"; exit 3; fi
  mode=$(stat -c %a "$d")
  if [ "$mode" != 700 ]; then echo "ERROR $d has mode $mode: others can get in; chmod 700 it after checking its contents"; exit 3; fi
done
dest="$st/$2"
if [ "$3" = replace ]; then
  # unpacked beside it first, then swapped in: a failed copy leaves the old one whole
  new="$dest.new.$$"
  mkdir -m 700 "$new" || { echo "ERROR cannot make $new"; exit 3; }
  tar -x --no-same-owner --no-same-permissions -C "$new" -f - || { rm -rf "$new"; echo "ERROR unpacking into $new failed"; exit 3; }
  if [ -L "$dest" ]; then echo "ERROR $dest is a link; remove it"; rm -rf "$new"; exit 3; fi
  rm -rf "$dest" && mv "$new" "$dest" || { echo "ERROR replacing $dest failed"; exit 3; }
else
  mkdir -m 700 "$dest" 2>/dev/null || { echo "ERROR $dest exists already or cannot be made"; exit 3; }
  tar -x --no-same-owner --no-same-permissions -C "$dest" -f - || { echo "ERROR unpacking into $dest failed"; exit 3; }
fi
echo "DIR $dest"
