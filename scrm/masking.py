"""Server-side masking of personal data; the unmasked value never reaches a page that may not show it."""


def mask_mobile(mobile: str) -> str:
    """``+8613812345678`` → ``138****5678``; other regions keep the country code and the last four."""
    if not mobile:
        return ""
    if mobile.startswith("+86") and len(mobile) == 14:
        national = mobile[3:]
        return f"{national[:3]}****{national[-4:]}"
    return f"{mobile[:3]}****{mobile[-4:]}" if len(mobile) > 7 else "****"


def mask_name(name: str) -> str:
    """``王小明`` → ``王**``: enough for a guide to greet, not enough to identify."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1 if len(name) > 1 else 1)
