"""A synthetic talking subject with known ground truth (the demo clip and test fixture): audio
(synthesised speech), face (the photo rig), clip (the subject video and its truth file).
This face re-exports their public names."""
from talkctl.synthetic.audio import (  # noqa: F401
    SUBJECT_VOICE,
    UNSEEN_VOICE,
    SyntheticAudio,
    Voice,
    make_audio,
    per_frame_rms,
    speech_envelope,
)
from talkctl.synthetic.clip import (  # noqa: F401
    SyntheticSubject,
    _backdrop,
    make_subject,
)
from talkctl.synthetic.face import (  # noqa: F401
    FACE_HEIGHT_M,
    PIVOT_BEHIND_M,
    REST_DEPTH_M,
    blink_curve,
    euler_to_matrix,
)
