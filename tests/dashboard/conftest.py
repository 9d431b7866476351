import pytest
from django.conf import settings


@pytest.fixture
def english(client):
    """Pages in English (the language switcher's cookie), so assertions can name the msgids."""
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client
