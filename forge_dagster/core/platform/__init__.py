"""The prompt platform: processors and their registry, validation and repair, pricing, budgets, exports."""
