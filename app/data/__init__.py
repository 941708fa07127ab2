"""Data access: MongoDB (client, collections, indexes), the Redis item cache, and the queries
on items and on task records that the API and the workers share."""
