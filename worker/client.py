"""The Temporal client, with the pydantic data converter (and, when keys are set, encryption) every part shares."""

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from worker.codec import codec_from_settings, with_encryption
from worker.settings import Settings


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend and namespace."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=with_encryption(pydantic_data_converter, codec_from_settings(settings.codec_keys)),
    )
