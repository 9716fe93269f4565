"""authgate: a reverse-proxy authentication sidecar for SAML 2.0 and OpenID Connect."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

__version__ = "0.1.0"

# pysaml2 references cryptography's CFB mode at import time; authgate never uses
# CFB, and the warning would be the first thing a newcomer sees from `authgate demo`.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"saml2\.")
