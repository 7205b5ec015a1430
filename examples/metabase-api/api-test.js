// Metabase's documented JavaScript example ("API keys" docs page, "Example
// GET requests"), as the docs wrote it; only the host can be overridden with
// METABASE_HOST, so that it can be pointed at keygate's admin listener.
// Run it with `node api-test.js`.

// Assuming you've set the key in process with
// `export METABASE_API_KEY="YOUR_KEY_HERE"`
const API_KEY = process.env.METABASE_API_KEY;

const init = {
  headers: {
    "Content-Type": "application/json",
    "X-API-KEY": API_KEY,
  },
};

const host = process.env.METABASE_HOST || "http://127.0.0.1:3000";

async function getGroups() {
  const response = await fetch(`${host}/api/permissions/group`, init);
  return response.json();
}

getGroups().then(groups => console.log("Groups in your Metabase:", groups));
