"""`starchat data pairs`: preference pairs mined from a model's own replies, tested in eval's sandbox.

It sits above `starchat.eval` (whose sandbox, programs and scoring it runs) and `starchat.data` (whose
readers, split and writer it uses), so that neither of those imports the other's way up.
"""

from starchat.pairs.mine import PairsConfig, build_pairs

__all__ = ["PairsConfig", "build_pairs"]
