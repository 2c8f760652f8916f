# A script in the style of SecretFlow's tutorials (written for one machine, address='local'),
# changed only where the brief allows: its init lines. The two original lines are kept as comments.
import numpy as np
import secretflow as sf
from sfcluster import runtime

# sf.init(['alice', 'bob'], address='local')
cluster = runtime.init(log_to_driver=False)
alice, bob = sf.PYU('alice'), sf.PYU('bob')
# spu = sf.SPU(sf.utils.testing.cluster_def(['alice', 'bob']))
spu = cluster.spu


def get_data_x():
    np.random.seed(7)
    return np.random.randint(100, size=(4, 3)).astype(np.float32)


def get_data_y():
    np.random.seed(8)
    return np.random.randint(100, size=(3, 2)).astype(np.float32)


def dot(x, y):
    return x @ y


x = alice(get_data_x)()
y = bob(get_data_y)()
z = spu(dot)(x.to(spu), y.to(spu))
expected = sf.reveal(alice(dot)(x, y.to(alice)))
print("z on the SPU:", sf.reveal(z).tolist())
print("TUTORIAL OK" if np.allclose(sf.reveal(z), expected, atol=1e-2) else "TUTORIAL WRONG")
