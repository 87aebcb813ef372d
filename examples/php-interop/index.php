<?php
/**
 * The PHP half of the example: a page that counts its visits in the shared session and
 * shows every user field, whichever side wrote it.
 *
 *   php -S 127.0.0.1:8000 examples/php-interop/index.php
 *
 * Open http://localhost:8000 and the Rust half at http://localhost:3000: cookies are
 * per host, not per port, so both see the same `sid` cookie.
 */

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';

if (!load_predis()) {
    http_response_code(500);
    echo "Predis not found: apt-get install php-nrk-predis, or composer require predis/predis\n";
    exit;
}
$store = session_store();
$cookie = ['path' => '/', 'httponly' => true, 'samesite' => 'Lax', 'secure' => true];

$session = isset($_COOKIE['sid']) ? $store->load((string) $_COOKIE['sid']) : null;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    // Logout. (SameSite=Lax keeps cross-site POSTs from carrying the cookie; a real app
    // also checks a CSRF token.)
    if ($session !== null) {
        $store->destroy($session->id);
    }
    setcookie('sid', '', ['expires' => 1] + $cookie);
    header('Location: /', true, 303);
    exit;
}
if ($session === null || !$store->save($session, increment: ['php_visits' => 1])) {
    // No session, or it ended (or moved to a new ID) since the load: start a new one.
    $id = $store->create(['php_visits' => '1']);
    setcookie('sid', $id, $cookie);
} else {
    $id = $session->id;
}
$session = $store->load($id);
$rust = getenv('RUST_URL') ?: 'http://localhost:3000/';
$h = fn (string $s): string => htmlspecialchars($s, ENT_QUOTES);
header('Cache-Control: no-store');
?>
<!doctype html>
<meta charset="utf-8">
<title>PHP side</title>
<h1>PHP side</h1>
<p>Session <code><?= $h(substr($id, 0, 8)) ?>…</code>, idle TTL <?= (int) ($session?->ttl) ?> s.
<table>
  <tr><th>field</th><th>value</th></tr>
  <?php foreach ($session?->fields ?? [] as $field => $value): ?>
  <tr><td><?= $h((string) $field) ?></td><td><?= $h($value) ?></td></tr>
  <?php endforeach ?>
</table>
<p><a href="<?= $h($rust) ?>">Rust side</a>
<form method="post"><button>Log out</button></form>
