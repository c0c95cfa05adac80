"""Every file a run or sweep folder holds, named once: what writes it and what reads it (the report,
`expframe-eval`, `expframe-deploy`, resume) use these names, so a renamed file cannot be half-renamed."""

from pathlib import Path

METRICS_FILE = "metrics.json"  # status, figures, environment: one per run, written atomically
HISTORY_FILE = "history.csv"  # one row per epoch, rewritten atomically after each
MODEL_FILE = "model.pt"  # the trained weights (a state dict, read with weights_only=True)
CHECKPOINT_FILE = "last.ckpt"  # everything resume needs to continue exactly
SHIFT_FILE = "shift.json"  # accuracy per corruption and severity, and the corrupted inputs' hash
RETRAIN_FILE = "retrain.json"  # a retraining's gate: both models' figures, the decision, the parent
REJECTED_MODEL_FILE = "rejected.pt"  # a retraining the gate rejected, kept beside (never model.pt)
DEPLOY_FILE = "deploy.json"  # serving variants' size, accuracy and latency
EVENTS_GLOB = "events.out.tfevents.*"  # TensorBoard's event files (one per writer)
EMISSIONS_FILE = "emissions.csv"  # CodeCarbon's record of the run's energy
CLAIMS_DIR = ".claims"  # a sweep folder's per-point claims (expframe.sweep.claims), made before its first job
LOCK_FILE = ".expframe.lock"  # the live process writing into a run or sweep folder
HYDRA_DIR = Path(".hydra")
CONFIG_FILE = HYDRA_DIR / "config.yaml"  # the job's resolved config (Hydra)
HYDRA_FILE = HYDRA_DIR / "hydra.yaml"  # Hydra's own settings, the group choices among them
MULTIRUN_FILE = "multirun.yaml"  # a sweep folder's command line (Hydra)
FOLD_PREFIX = "fold_"  # a cross-validated job's per-fold run folders: fold_1/, fold_2/, ...
