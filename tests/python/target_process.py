"""A target engine in its own process for test_two_processes.py and
test_network_faults.py: registers a numpy array, prints its descriptors (hex) on one
line, then answers commands on stdin: 'sum' prints the sum of the array,
'inbound KEY UID' prints the inbound status code.

Arguments (optional): the address to listen on (127.0.0.1) and the array's size in
bytes (1 MiB)."""
import sys

import numpy as np

from ringxfer import BackendType, IOEngine, IOEngineConfig

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
size = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
engine = IOEngine("process-target", IOEngineConfig(host=host, port=0))
engine.create_backend(BackendType.TCP)
arr = np.zeros(size, dtype=np.uint8)
md = engine.register_memory(arr)
print(engine.get_engine_desc().pack().hex(), md.pack().hex(), flush=True)
for line in sys.stdin:
    words = line.split()
    if words == ["sum"]:
        print(int(arr.sum(dtype=np.uint64)), flush=True)
    elif len(words) == 3 and words[0] == "inbound":
        import time

        status = None
        for _ in range(2000):
            status = engine.pop_inbound_transfer_status(words[1], int(words[2]))
            if status is not None:
                break
            time.sleep(0.001)
        print(int(status.Code()) if status is not None else -1, flush=True)
    elif words == ["quit"]:
        break
engine.close()
