"""Quality and lip-sync figures: image (PSNR, SSIM), sequence (ImageFigures), lpips, lipsync
(LMD, mouth correlation, the energy proxy) and syncnet. This face re-exports their public names."""
from talkctl.metrics.image import (  # noqa: F401
    psnr,
    ssim,
    ssim_torch,
)
from talkctl.metrics.lipsync import (  # noqa: F401
    EYE_CORNERS,
    MEDIAPIPE_LIPS,
    MOUTH_INDICES,
    amplitude_ratio,
    audio_energy_per_frame,
    audio_mouth_sync,
    fill_gaps,
    lagged_correlation,
    lmd,
    mouth_follow,
    mouth_open_correlation,
    pearson,
)
from talkctl.metrics.lpips import (  # noqa: F401
    ALEXNET_FILE,
    LPIPS_LIN_FILE,
    _build_lpips_alex,
    load_lpips,
    lpips_distance,
    lpips_files,
)
from talkctl.metrics.sequence import (  # noqa: F401
    ImageFigures,
)
from talkctl.metrics.syncnet import (  # noqa: F401
    SYNCNET_FILE,
    SYNCNET_URL,
    build_syncnet,
    load_syncnet,
    mfcc,
    sync_offset,
    syncnet_embeddings,
    syncnet_path,
    syncnet_score,
    syncnet_status,
)
from talkctl.metrics.weights import (  # noqa: F401
    weights_dir,
)
