-- Open and click tracking: the original URLs behind a message's rewritten links, by position
-- (links[1] is position 0). A click token names a message and a position and redirects only
-- to the URL stored here, so no token can send anyone anywhere else. One row per tracked
-- message, written in the enqueue's transaction; removed with its message.
CREATE TABLE tracked_links (
    message_id  uuid PRIMARY KEY REFERENCES outbound_messages (id) ON DELETE CASCADE,
    links       text[] NOT NULL
);
