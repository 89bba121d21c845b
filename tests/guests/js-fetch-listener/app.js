// A JavaScript component written the old way, as a fetch listener: it cannot
// answer a second request on one instance (StarlingMonkey issue 247). The
// host must notice and give it a fresh instance per request from then on.
let served = 0;

addEventListener('fetch', (event) => {
  served += 1;
  event.respondWith(
    new Response(JSON.stringify({ served }), { headers: { 'content-type': 'application/json' } }),
  );
});
