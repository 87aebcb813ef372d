<?php
/**
 * The PHP session store from the command line: what the PHP app would do, one step per
 * call (the interop test drives it this way).
 *
 *   php cli.php check                     exit 0 if Predis loads, 2 otherwise
 *   php cli.php create [field=value ...] [--ttl=N]   prints the new ID
 *   php cli.php load ID                   prints {"fields":{..},"ttl":N,"moving":false} or null
 *   php cli.php set ID field value        prints ok, or gone if there is no live session
 *   php cli.php incr ID field [by]        prints the new value, or gone
 *   php cli.php remove ID field           prints ok, or gone
 *   php cli.php ttl ID seconds            prints ok, or gone
 *   php cli.php destroy ID                prints ok
 *
 * A reserved or empty field name prints `refused: ...` and exits 1.
 *
 * See bootstrap.php for the environment variables (REDIS_URL, SESSION_PREFIX, ...).
 */

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';

if (!load_predis()) {
    fwrite(STDERR, "Predis not found: apt-get install php-nrk-predis, or composer require predis/predis\n");
    exit(2);
}

$args = array_slice($argv, 1);
$command = array_shift($args) ?? 'help';
if ($command === 'check') {
    exit(0);
}
$store = session_store();

/** Loads the session named on the command line, or prints `gone` and exits. */
function loaded(RedisSessionStore $store, ?string $id): LoadedSession
{
    $session = $id === null ? null : $store->load($id);
    if ($session === null) {
        echo "gone\n";
        exit(0);
    }
    return $session;
}

try {
    run($store, $command, $args);
} catch (InvalidArgumentException $e) {
    echo 'refused: ', $e->getMessage(), "\n";
    exit(1);
}

function run(RedisSessionStore $store, string $command, array $args): void
{
switch ($command) {
    case 'create':
        $fields = [];
        $ttl = null;
        foreach ($args as $arg) {
            if (str_starts_with($arg, '--ttl=')) {
                $ttl = (int) substr($arg, 6);
            } else {
                [$field, $value] = explode('=', $arg, 2) + [1 => ''];
                $fields[$field] = $value;
            }
        }
        echo $store->create($fields, $ttl), "\n";
        break;
    case 'load':
        $session = $store->load($args[0] ?? '');
        echo json_encode($session === null ? null : [
            'fields' => (object) $session->fields,
            'ttl' => $session->ttl,
            'moving' => $session->moving,
        ]), "\n";
        break;
    case 'set':
        $session = loaded($store, $args[0] ?? null);
        echo $store->save($session, set: [$args[1] => $args[2] ?? '']) ? "ok\n" : "gone\n";
        break;
    case 'incr':
        $session = loaded($store, $args[0] ?? null);
        $field = $args[1];
        if ($store->save($session, increment: [$field => (int) ($args[2] ?? 1)])) {
            echo $store->load($session->id)?->fields[$field] ?? 'gone', "\n";
        } else {
            echo "gone\n";
        }
        break;
    case 'remove':
        $session = loaded($store, $args[0] ?? null);
        echo $store->save($session, remove: [$args[1]]) ? "ok\n" : "gone\n";
        break;
    case 'ttl':
        $session = loaded($store, $args[0] ?? null);
        echo $store->save($session, ttl: (int) $args[1]) ? "ok\n" : "gone\n";
        break;
    case 'destroy':
        $store->destroy($args[0] ?? '');
        echo "ok\n";
        break;
    default:
        fwrite(STDERR, "usage: see the top of cli.php\n");
        exit(64);
}
}
