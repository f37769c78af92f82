"""A SIB head as the reference head (`metaunlab.sib`) plus composable parts.

`Head` is the frozen description of a head's composition, saved with its checkpoints;
`parts` holds the components it chains: episode feature transforms and logit readouts.
"""

from metaunlab.head import parts
from metaunlab.head.description import HEAD_FILE, Head

__all__ = ["HEAD_FILE", "Head", "parts"]
