"""Forward operators, noise models and tasks. Importing this package registers every operator."""
from invlab.ops.base import OPERATORS, LinearOperator, Operator, register
from invlab.ops.blur import Blur
from invlab.ops.cs import CompressedSensing
from invlab.ops.mask import Identity, Mask
from invlab.ops.mri import MultiCoilMRI, SingleCoilMRI
from invlab.ops.noise import NOISES, Gaussian, LogisticDither, Noise, Poisson, make_noise
from invlab.ops.nonlinear_blur import NonlinearBlur
from invlab.ops.phase import CodedPhaseRetrieval, FourierPhaseRetrieval
from invlab.ops.quantize import OneBitQuantized
from invlab.ops.radon import Radon
from invlab.ops.resample import SuperResolution
from invlab.ops.task import Task
from invlab.ops.video import VideoBlur, VideoFrameMask, VideoSuperResolution

__all__ = [
    "OPERATORS", "Operator", "LinearOperator", "register", "Blur", "CompressedSensing", "Identity", "Mask",
    "SingleCoilMRI", "MultiCoilMRI", "NOISES", "Noise", "Gaussian", "Poisson", "LogisticDither",
    "make_noise", "NonlinearBlur", "FourierPhaseRetrieval", "CodedPhaseRetrieval", "OneBitQuantized",
    "Radon", "SuperResolution", "Task", "VideoBlur", "VideoFrameMask", "VideoSuperResolution",
]
