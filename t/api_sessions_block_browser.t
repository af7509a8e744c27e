#!/usr/bin/perl

# End to end in a real browser: a session recorded through nginx (two workers)
# is blocked with the Block button of its page in the explorer
# (build/api-sessions), driven in headless Chromium; every worker refuses its
# token within the denylist's interval plus a second. Unblock on the Blocks
# page lets it through again as fast. The time from each click to each
# worker's first answer of the new kind is printed.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;
use Test::Explorer;
use Test::WebDriver;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

explorer_binary();
my @programs = browser_programs();

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(14);

explorer_start($t, 8707, '--token', 's3cret');

$t->write_file('secret', 'e2e-secret-0123456789abcdef0123456789');
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export url=http://127.0.0.1:%%PORT_8707%%/v1/records
                        "header=Authorization:Bearer s3cret" flush=100ms;
    api_sessions_denylist zone=deny:1m interval=1s
                          url=http://127.0.0.1:%%PORT_8707%%/v1/denylist
                          "header=Authorization:Bearer s3cret";

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key $http_x_session_token name=token;

        location / {
            api_sessions_block on;
            add_header X-Worker $pid always;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location = /status {
            api_sessions_status;
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        location / { return 200 'ok'; }
    }
}

EOF

$t->run();

my $browser = Test::WebDriver->new(@programs, $t->testdir());
my $explorer = 'http://127.0.0.1:' . port(8707);

###############################################################################

sub get {
	my ($token) = @_;
	my $r = http(<<EOF) // '';
GET /items HTTP/1.0
Host: localhost
X-Session-Token: $token

EOF
	my ($worker) = $r =~ /^X-Worker: (\d+)/mi;
	return (http_status($r) // 0, $worker // 0);
}

# Polls on new connections, so that the requests spread over the workers,
# until every worker answered $status three times in a row; returns, per
# worker, the seconds from $since to its first answer of that run, or undef
# after $within seconds. A worker that goes back to another status starts
# over: it is the lasting change that is timed.
sub per_worker {
	my ($token, $status, $since, $within) = @_;

	my (%first, %streak);
	my $workers = () = $t->worker_pids();

	while (time() - $since < $within) {
		my ($code, $worker) = get($token);
		my $at = time() - $since;

		if ($code == $status) {
			$first{$worker} //= $at;
			$streak{$worker}++;
		} else {
			delete $first{$worker};
			$streak{$worker} = 0;
		}

		return \%first
			if $workers == grep { $_ >= 3 } values %streak;
		sleep(0.01);
	}

	return undef;
}

sub report {
	my ($what, $first) = @_;
	diag(sprintf('%s: worker %d after %.3fs', $what, $_, $first->{$_}))
		for sort { $first->{$a} <=> $first->{$b} } keys %$first;
}

sub api {
	my ($uri) = @_;
	my $r = http_get($uri, port => 8707) // return undef;
	return eval { decode_json(http_content($r)) };
}

is((get('stolen-token'))[0], 200, 'not blocked yet');
get('stolen-token') for 1 .. 3;
get('someone-else');

my $session;
my $deadline = time() + patience(15);
until ($session || time() > $deadline) {
	my $list = api('/api/sessions?limit=10');
	($session) = grep { $_->{requests} == 4 } @{$list->{sessions} // []};
	sleep(0.1);
}
ok($session, 'the session reached the explorer') or BAIL_OUT('no session');
my $id = $session->{session_id};

# interval + 1s, stretched only when nginx runs under valgrind.
my $bound = patience(1 + 1);

# Block with the session page's Block button.

$browser->open("$explorer/sessions/$id");
like($browser->text('section.block'), qr/Not blocked/, 'the page: not blocked');
$browser->type_into('#block-reason', 'stolen token');

my $clicked = time();
$browser->click('#block-session');
my $first = per_worker('stolen-token', 403, $clicked, $bound + 5);

ok($first, 'every worker refuses the token');
my ($slowest) = sort { $b <=> $a } values %{$first // {}};
ok(defined $slowest && $slowest <= $bound,
	"every worker refuses the token within interval + 1s of the click")
	or diag('took ' . ($slowest // 'too long'));
report('Block clicked, first 403', $first // {});

like($browser->text('p.blocked-state'), qr/blocked since .* by ui, until .*: stolen token/,
	'the page: blocked, by whom and why');
is((get('someone-else'))[0], 200, 'another token passes');

my $s = wait_status('/status', sub { ($_[0]{denylist_entries} // 0) == 1 });
cmp_ok($s->{blocked}, '>=', 6, 'status: the refused requests counted');

# Unblock on the Blocks page, reached from the header.

$browser->click("header.top nav.sections a[href='/blocks']");
ok($browser->wait_until(sub { $browser->current_url() =~ m{/blocks$} }),
	'the Blocks page');
my @rows = $browser->find_all('table.blocks tbody tr');
is(scalar @rows, 1, 'the Blocks page: one entry');

$clicked = time();
$browser->click('table.blocks form.unblock button');
$first = per_worker('stolen-token', 200, $clicked, $bound + 5);

ok($first, 'every worker lets the token through again');
($slowest) = sort { $b <=> $a } values %{$first // {}};
ok(defined $slowest && $slowest <= $bound,
	"every worker lets the token through within interval + 1s of the click")
	or diag('took ' . ($slowest // 'too long'));
report('Unblock clicked, first 200', $first // {});

like($browser->text('p.empty'), qr/^Nothing is blocked/,
	'the Blocks page: nothing is blocked');

$s = wait_status('/status', sub { ($_[0]{denylist_entries} // 1) == 0 });
is($s->{denylist_entries}, 0, 'status: the list is empty');

###############################################################################
