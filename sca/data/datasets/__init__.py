"""Dataset registration: importing this package registers every source (lazily: nothing is read)."""

from sca.data.datasets.register_demo import register_all_demo

register_all_demo()
