"""Dataset registration: importing this package registers every source (lazily: nothing is read)."""

from sca.data.datasets.register_demo import register_all_demo
from sca.data.datasets.register_demo_refs import register_all_demo_refs

register_all_demo()
register_all_demo_refs()
