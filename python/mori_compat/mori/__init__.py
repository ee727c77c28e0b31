"""ringxfer-mori: MORI-IO's Python API (``mori.io``, ``mori.io.engine``, ``mori.cpp``) on
ringxfer, so that clients written for MORI-IO run unchanged over ringxfer's TCP engine.

This is not AMD's MORI: it provides MORI's IO names only, with MORI's signatures and
semantics, and ringxfer's transport underneath. A ringxfer engine does not speak MORI's
wire protocol: both sides of a transfer must use this package (or ringxfer). RDMA and
XGMI backend requests are served over TCP only when asked for
(``RINGXFER_SERVE_RDMA_AS_TCP=1`` or ``mori.io.serve_rdma_as_tcp(True)``).
"""

import ringxfer as _ringxfer

#: Which MORI this is: the compatibility package, and the ringxfer underneath.
__version__ = "ringxfer-mori " + _ringxfer.__version__
__ringxfer__ = True
