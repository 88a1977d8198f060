"""SCA: teach the Segment Anything Model to caption what it segments.

Importing ``sca`` applies the detectron2 compatibility layer (:mod:`sca.compat`) before any
detectron2 module is imported.
"""

from sca import compat as _compat

_compat.apply()

__version__ = "0.1.0"
