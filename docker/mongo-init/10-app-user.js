// Run once by the official mongo image on an empty data directory: the application's user,
// with readWrite on its database only (the root user comes from MONGO_INITDB_ROOT_*).
const database = process.env.MONGO_INITDB_DATABASE || "app";
db.getSiblingDB(database).createUser({
  user: process.env.MONGO_APP_USERNAME,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: database }],
});
