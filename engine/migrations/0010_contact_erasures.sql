-- The erasure generation (engine.intake.known_contacts): every erase (engine.privacy) adds one
-- to it in its transaction, while it holds the intake's contacts lock exclusively. An intake
-- process skips the contacts upsert for contacts it saw committed under the generation it
-- reads; a changed generation makes it upsert every contact again and forget the others.
CREATE TABLE contact_erasures (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    generation bigint NOT NULL
);
INSERT INTO contact_erasures (generation) VALUES (0);
