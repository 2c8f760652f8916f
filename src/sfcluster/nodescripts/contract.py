# The contract between the controller and the node scripts, in ONE place that both sides read:
# the controller and every node script import this module (sfcluster.nodescripts.contract; on a
# node it travels with the script: nodescripts.bundle). Python 3.10, stdlib only, no imports beyond
# what every node script has.
#
# Exit codes of the node scripts: their own range, never one of sfcluster's (exitcodes.py, 64-78),
# which the controller maps them to, each together with the control line that says why (a
# wrapper whose driver ran exits with the driver's code: the EXIT line tells them apart).
HELD_EXIT = 81      # the cluster lock is held by another operation (oplock.py, driver_wrapper.py)
FOREIGN_EXIT = 82   # a driver sfcluster did not start is connected (driver_wrapper.py)
NORAY_EXIT = 83     # the cluster's Ray cannot be reached from the head (driver_wrapper.py)
UNSAFE_EXIT = 84    # the node's state dir (or Ray's temp dir's parent) is not safe to use
BAD_EXIT = 3        # a refused request or state (oplock.py, run_ctl.py, ship.sh)

# Control lines: the driver wrapper writes "SFC:<KIND> <json>\n" on its stderr; a driver line
# that starts with the prefix is passed on as "[driver] SFC:..." (a script cannot speak for us).
CONTROL_PREFIX = "SFC:"
DRIVER_MARK = "[driver] "
BEAT = "BEAT"            # every 5 s, for the run's whole life; no payload
LOCKED = "LOCKED"        # the lock is held: the holder as describe_holder() verified it
FOREIGN = "FOREIGN"      # [{ip, pid, entrypoint}]: drivers sfcluster did not start
NORAY = "NORAY"          # why Ray cannot be reached
UNSAFE = "UNSAFE"        # why the state dir was refused
STARTED = "STARTED"      # {pid, log, wrapper_pid}: the driver runs
NOGATE = "NOGATE"        # production mode: why the TLS-only gate of a public port could not start
LINKING = "LINKING"      # production mode: this party's driver is in runtime.init, waiting for its peers
READY = "READY"          # production mode: this party's driver reached every peer (runtime.init's barrier)
NODE_DOWN = "NODE_DOWN"  # {party, host}: a party's node is lost (the run stops)
STARVED = "STARVED"      # {message}: a party's resources are starved (the run stops)
STOPPING = "STOPPING"    # why the wrapper is stopping the driver
EXIT = "EXIT"            # {code, why, kind}: the driver ended; kind is one of STOP_KINDS or ""
# Why the wrapper stopped the driver (EXIT's kind); the controller returns its own exit code for these.
# data_files.py writes this line to stderr every DATA_BEAT_EVERY s while it works (hashing or
# receiving a large file): the controller ends a data command that stays silent DATA_IDLE s.
DATA_BEAT, DATA_BEAT_EVERY = "sfcluster-data-beat", 5
STOP_KINDS = ("node_lost", "foreign_driver", "foreign_node", "starved", "cancelled", "interrupted", "controller_gone")
# What the wrapper's detaching parent returns for the first control line that decides the run's start.
START_OUTCOMES = ((STARTED, 0), (LOCKED, HELD_EXIT), (NORAY, NORAY_EXIT), (FOREIGN, FOREIGN_EXIT))

# oplock.py (an `up`/`down` holding the cluster lock) writes one of these as its first stdout lines.
OP_WAITING, OP_LOCKED, OP_HELD, OP_ERROR = "WAITING", "LOCKED", "HELD", "ERROR"
# The controller sends a line a second on an oplock's or a wrapper's stdin; this long without one
# (or EOF) means the controller is gone.
HEARTBEAT_SILENCE = 10

# The wrapper's file name in a run dir (cancel and status verify a pid by it).
WRAPPER_NAME = "sfc_wrapper.py"

# A run id: when the run was started (the controller's clock) and 6 random hex digits. Checked
# against this pattern, anchored, before it becomes part of any path, on both sides.
RUN_ID_PATTERN = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"
# In a run dir on the head: the driver's output dir ($SFCLUSTER_OUTPUT), its log, and what the
# wrapper records when the driver ends ({code, kind, why, started, ended}: the exit code of a
# detached run). All of it is in reach of the driver (same user): read as untrusted data.
OUTPUT_DIR, LOG_NAME, RESULT_NAME = "output", "driver.log", "result.json"
# Marks a run dir whose outputs the controller has stored; cleanup may remove it then.
FETCHED_MARK = ".fetched"
# run_files.py (fetch) ends its stderr with this control line: {files, bytes, skipped, refused, ...}.
FETCHED = "FETCHED"

# A node's certificates (mutual TLS for Ray and SPU): <state dir>/TLS_DIR/{TLS_KEY, TLS_CERT, TLS_CA}.
TLS_DIR, TLS_KEY, TLS_CERT, TLS_CA = "tls", "node.key", "node.pem", "ca.pem"

# Environment the wrapper gives the driver (sfcluster/runtime.py reads it).
ENV_CONFIG = "SFCLUSTER_CONFIG"          # path of the run's generated SecretFlow config (JSON)
ENV_RUN_TOKEN = "SFCLUSTER_RUN_TOKEN"    # proves to runtime.guard() that `sfcluster run` started us
ENV_LOCK_INFO = "SFCLUSTER_LOCK_INFO"    # path of the lock info naming the run
ENV_READY = "SFCLUSTER_READY_FILE"       # production mode: runtime.init writes "linking", then "ready" there
ENV_GATE = "SFCLUSTER_GATE"              # production mode, tls on: {cross_silo, spu}: where the links listen
ENV_OUTPUT = "SFCLUSTER_OUTPUT"          # the run's output dir on the head: `run` fetches what is put there
ENV_NODE_HOME = "SFCLUSTER_NODE_HOME"    # unit tests only: the home the node scripts use

# provision.py (`sfcluster provision`): a provisioned venv carries VENV_MARKER (what it was asked
# to install: the digest the controller compares); a wheelhouse pushed from the controller lives in
# <state dir>/WHEELHOUSE_DIR with its manifest; a venv being replaced waits beside it as
# <venv>OLD_SUFFIX until the new one is verified (and is put back when it is not).
VENV_MARKER = ".sfcluster-provision.json"
WHEELHOUSE_DIR, WHEELHOUSE_MANIFEST = "wheelhouse", "manifest.json"
OLD_SUFFIX = ".sfc-old"
PROVISION_PYTHON = "3.10"   # the CPython major.minor SecretFlow's wheels are built for
# Directories that are never a venv of their own (nor replaced as one), whatever `python` says.
SYSTEM_DIRS = ("/", "/usr", "/usr/local", "/opt", "/home", "/root", "/bin", "/sbin", "/etc", "/var", "/tmp", "/lib",
               "/srv")
