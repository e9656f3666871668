-- Provider storage: when Forge deleted what the provider kept for a batch (OpenAI's input, output and error
-- files once every line is stored; an Anthropic batch when pruned). NULL: still held at the provider.
ALTER TABLE batches ADD COLUMN files_released_at timestamptz;
ALTER TABLE batches ADD COLUMN provider_forgotten_at timestamptz;
