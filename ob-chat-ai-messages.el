;;; ob-chat-ai-messages.el --- The messages a chat-ai block sends  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A chat-ai block's body may hold several turns of a conversation.  A
;; marker at the start of a line opens a turn:
;;
;;   [system]: You are terse.
;;   [user]: What is Org?
;;   [assistant]: An outliner.
;;   [user]: And Babel?
;;
;; The roles are system, developer, user and assistant; org-ai's
;; [SYS]:, [ME]: and [AI]: work too.  Text before any marker is a user
;; turn.  A backslash before a marker, \[user]:, keeps the line as text.
;;
;; Blocks that share a :session form one conversation in document
;; order: each earlier block contributes its turns, and its #+RESULTS:
;; as the assistant's answer.
;;
;; $name and ${name} in the body are replaced by the value of the
;; block's :var name.

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org-element)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-reply)

;;;; Turns in a block

(defconst ob-chat-ai-messages--roles
  '(("system" . "system") ("developer" . "developer") ("user" . "user")
    ("assistant" . "assistant") ("sys" . "system") ("me" . "user")
    ("ai" . "assistant"))
  "Turn markers, without brackets and in lower case, and the roles they open.")

(defconst ob-chat-ai-messages--marker
  (concat "^\\(\\\\\\)?\\[\\("
          (regexp-opt (mapcar #'car ob-chat-ai-messages--roles))
          "\\)\\]:[ \t]?")
  "The regexp of a turn marker at the start of a line, perhaps escaped.")

(defun ob-chat-ai-messages-turns (text)
  "Return the (ROLE . CONTENT) pairs of TEXT, in order.
Without any marker, TEXT is one user turn, exactly as written.
Otherwise each turn's content is trimmed, and empty turns are
dropped.  An escaped marker loses its backslash and stays text."
  (let ((case-fold-search t)
        (turns nil)
        (role "user")
        (lines nil)
        (marked nil))
    (dolist (line (split-string text "\n"))
      (cond
       ((not (string-match ob-chat-ai-messages--marker line))
        (push line lines))
       ((match-beginning 1)
        (push (substring line 1) lines))
       (t
        (push (cons role (string-join (nreverse lines) "\n")) turns)
        (setq marked t
              role (cdr (assoc (downcase (match-string 2 line))
                               ob-chat-ai-messages--roles))
              lines (list (substring line (match-end 0)))))))
    (push (cons role (string-join (nreverse lines) "\n")) turns)
    (if (not marked)
        turns
      (seq-remove (lambda (turn) (string-empty-p (cdr turn)))
                  (mapcar (lambda (turn) (cons (car turn) (string-trim (cdr turn))))
                          (nreverse turns))))))

;;;; Variables

(defun ob-chat-ai-messages-substitute (text vars)
  "Return TEXT with $NAME and ${NAME} replaced by the values in VARS.
VARS is an alist of (NAME . VALUE) as `org-babel--get-vars' gives
it; a table becomes Org table text.  Names that VARS lacks stay."
  (if (null vars)
      text
    (replace-regexp-in-string
     "\\$\\(?:{\\([[:alnum:]_-]+\\)}\\|\\([[:alpha:]_][[:alnum:]_-]*\\)\\)"
     (lambda (match)
       (let* ((name (or (match-string 1 match) (match-string 2 match)))
              (entry (assq (intern name) vars)))
         (if entry
             (save-match-data (ob-chat-ai-messages--value-text (cdr entry)))
           match)))
     text t t)))

(defun ob-chat-ai-messages--value-text (value)
  "Return VALUE, a Babel variable's value, as text for a prompt."
  (cond
   ((stringp value) value)
   ((and (consp value) (seq-some #'listp value))
    (orgtbl-to-orgtbl value nil))
   ((consp value) (mapconcat (lambda (item) (format "%s" item)) value "\n"))
   (t (format "%s" value))))

(declare-function orgtbl-to-orgtbl "org-table" (table params))

;;;; Threads across blocks

(defconst ob-chat-ai-messages--block-start
  "^[ \t]*#\\+begin_src[ \t]+chat-ai\\(?:[ \t]\\|$\\)"
  "The regexp of the first line of a chat-ai source block.")

(defun ob-chat-ai-messages-history (session here)
  "Return the conversation so far of SESSION, from the blocks before HERE.
Each chat-ai block of SESSION contributes its turns, then its result
as the assistant's turn.  Return (TURNS . SYSTEM), SYSTEM being the
:system of the first of those blocks."
  (let ((turns nil)
        (system nil)
        (first t)
        (case-fold-search t))
    (save-excursion
      (save-restriction
        (widen)
        (goto-char (point-min))
        (while (and (re-search-forward ob-chat-ai-messages--block-start nil t)
                    (< (match-beginning 0) here))
          (goto-char (match-beginning 0))
          (let* ((info (org-babel-get-src-block-info 'no-eval))
                 (params (nth 2 info)))
            (when (equal (format "%s" (cdr (assq :session params))) session)
              (when first
                (setq system (cdr (assq :system params))
                      first nil))
              (setq turns (append turns (ob-chat-ai-messages-turns (nth 1 info))))
              (let ((answer (ob-chat-ai-messages--result)))
                (when answer
                  (setq turns (append turns (list (cons "assistant" answer))))))))
          (forward-line))))
    (cons turns system)))

(defun ob-chat-ai-messages--result ()
  "Return what the model said in the result of the block at point, or nil.
chat-ai's own lines in it (placeholder, notes, error line) are left out."
  (let ((where (org-babel-where-is-src-block-result)))
    (when where
      (save-excursion
        (goto-char where)
        (forward-line)
        (ob-chat-ai-reply-answer
         (ob-chat-ai-messages--result-text
          (buffer-substring-no-properties (point) (org-babel-result-end))))))))

(defun ob-chat-ai-messages--result-text (text)
  "Return result TEXT without its Org markup."
  (let ((lines (split-string (string-trim-right text) "\n")))
    (string-trim
     (cond
      ((seq-every-p (lambda (line) (string-match-p "\\`[ \t]*:\\(?: \\|\\'\\)" line))
                    lines)
       (mapconcat (lambda (line) (replace-regexp-in-string "\\`[ \t]*: ?" "" line))
                  lines "\n"))
      ((string-match-p "\\`[ \t]*\\(?:#\\+begin_\\|:results:\\)" (car lines))
       (org-unescape-code-in-string
        (mapconcat #'identity (butlast (cdr lines)) "\n")))
      (t text)))))

(declare-function org-unescape-code-in-string "org-src" (s))

(provide 'ob-chat-ai-messages)

;;; ob-chat-ai-messages.el ends here
