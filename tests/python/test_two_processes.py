"""An initiator here and a target in another Python process."""
import os
import subprocess
import sys

import numpy as np
import torch

from conftest import make_engine
from ringxfer import EngineDesc, MemoryDesc, StatusCode


def test_write_and_read_across_processes():
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "target_process.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        line = proc.stdout.readline().split()
        remote = EngineDesc.unpack(bytes.fromhex(line[0]))
        rmd = MemoryDesc.unpack(bytes.fromhex(line[1]))
        assert remote.key == "process-target" and rmd.size == 1 << 20
        a = make_engine("process-initiator")
        try:
            a.register_remote_engine(remote)
            src = torch.ones(1 << 20, dtype=torch.uint8)
            ms = a.register_torch_tensor(src)
            uid = a.allocate_transfer_uid()
            st = a.write(ms, 0, rmd, 0, 1 << 20, uid)
            st.wait(timeout=30)
            proc.stdin.write("sum\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) == 1 << 20
            proc.stdin.write(f"inbound process-initiator {uid}\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) == int(StatusCode.SUCCESS)
            back = np.zeros(1 << 20, np.uint8)
            mb = a.register_memory(back)
            a.read(mb, 0, rmd, 0, 1 << 20, a.allocate_transfer_uid()).wait(timeout=30)
            assert back.all()
        finally:
            a.close()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
