"""English stopwords: common function words removed by :class:`EnglishAnalyzer`.

The list is compared against lowercased tokens *before* stemming. It also contains the
fragments that contractions leave behind once text is split on word characters
(``"don't"`` becomes ``"don"`` and ``"t"``).
"""

from __future__ import annotations

__all__ = ["ENGLISH_STOPWORDS"]

_WORDS = """
a an the
i me my mine myself we us our ours ourselves
you your yours yourself yourselves
he him his himself she her hers herself it its itself
they them their theirs themselves
this that these those
who whom whose which what
am is are was were be been being
have has had having do does did doing
will would shall should can could may might must
and or but nor if then else so than because as
while until unless although though whether
of at by for with without about against between into onto
through during before after above below to from up down
in out on off over under upon within along across toward towards
again further once here there when where why how
all any both each few more most other some such
no not only own same too very
just also now ever yet
s t d ll m o re ve y
don doesn didn isn aren wasn weren hasn haven hadn
couldn shouldn wouldn mustn needn shan mightn ain
"""

#: Frozen set of English function words (lowercase).
ENGLISH_STOPWORDS: frozenset[str] = frozenset(_WORDS.split())
