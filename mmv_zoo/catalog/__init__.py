"""The zoo as a catalog: list, cards, the generated zoo README, new entries from templates, publishing runs."""
