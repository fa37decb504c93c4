// Collections that config/compose.yaml queries (alias `mongo`), with demo documents, and
// the read-only user authz connects as. Run once by the mongo image on an empty data
// volume (/docker-entrypoint-initdb.d/, as the root user, with mongosh).
const app = db.getSiblingDB("app");

app.createUser({
  user: "authz",
  pwd: process.env.MONGO_AUTHZ_PASSWORD,
  roles: [{ role: "read", db: "app" }],
});

app.followers.createIndex({ userId: 1, followerId: 1 }, { unique: true });
app.followers.insertMany([
  { userId: "u2", followerId: "u1" }, // u1 follows u2: u1 may read u2's profile
  { userId: "u3", followerId: "u2" },
]);
